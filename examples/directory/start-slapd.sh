#!/bin/sh
# Runs a private OpenLDAP slapd holding Northwind's directory on
# ldap://127.0.0.1:3890 (SLAPD_HOST, SLAPD_PORT), in the foreground (Ctrl-C stops it). Needs the
# Debian/Ubuntu packages slapd and ldap-utils.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${SLAPD_DIR:-$(mktemp -d /tmp/northwind-slapd.XXXXXX)}
port=${SLAPD_PORT:-3890}
host=${SLAPD_HOST:-127.0.0.1}
mkdir -p "$dir/data"
cat > "$dir/slapd.conf" <<EOC
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload ppolicy
pidfile $dir/slapd.pid
database mdb
maxsize 1073741824
suffix "dc=northwind,dc=example"
rootdn "cn=admin,dc=northwind,dc=example"
rootpw $(cat "$here/ldap-password")
directory $dir/data
index objectClass,uid,employeeNumber,member eq
overlay ppolicy
ppolicy_default "cn=default,ou=policies,dc=northwind,dc=example"
EOC
if [ ! -e "$dir/data/data.mdb" ]; then
  /usr/sbin/slapadd -q -f "$dir/slapd.conf" -l "$here/northwind.ldif"
fi
echo "slapd serving Northwind on ldap://$host:$port (data in $dir); Ctrl-C stops it"
exec /usr/sbin/slapd -f "$dir/slapd.conf" -h "ldap://$host:$port/" -d 0
