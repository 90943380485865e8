//! A private OpenLDAP `slapd` per test, on a random loopback port, with the
//! ppolicy overlay and a default password policy (so a locked account
//! really cannot bind). A watchdog shell owns it and stops it when the test
//! process ends; [`Slapd::stop`] and [`Slapd::start`] simulate an outage.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
pub const ADMIN_PW: &str = "admin-secret";
pub const PEOPLE: &str = "ou=people,dc=example,dc=com";
pub const GROUPS: &str = "ou=groups,dc=example,dc=com";

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";

const WATCHDOG: &str = r#"
"$SLAPD" -f "$DIR/slapd.conf" -h "ldap://127.0.0.1:$PORT/" -d 0 >>"$DIR/slapd.log" 2>&1 &
S=$!
trap 'kill -TERM "$S" 2>/dev/null; wait "$S"; exit 0' TERM INT
while [ -d "/proc/$OWNER" ] && kill -0 "$S" 2>/dev/null; do sleep 0.2; done
kill -TERM "$S" 2>/dev/null
wait "$S"
"#;

fn conf(dir: &std::path::Path) -> String {
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         include /etc/ldap/schema/nis.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         moduleload ppolicy\n\
         pidfile {dir}/slapd.pid\n\
         database mdb\n\
         maxsize 1073741824\n\
         suffix \"{BASE}\"\n\
         rootdn \"{ADMIN_DN}\"\n\
         rootpw {ADMIN_PW}\n\
         directory {dir}/data\n\
         index objectClass,uid,employeeNumber,member eq\n\
         overlay ppolicy\n\
         ppolicy_default \"cn=default,ou=policies,{BASE}\"\n",
        dir = dir.display()
    )
}

/// The base entries every instance starts with.
pub fn base_ldif() -> String {
    format!(
        "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
         dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=policies,{BASE}\nobjectClass: organizationalUnit\nou: policies\n\n\
         dn: cn=default,ou=policies,{BASE}\nobjectClass: person\nobjectClass: pwdPolicy\ncn: default\nsn: default\n\
         pwdAttribute: userPassword\npwdLockout: TRUE\n\n"
    )
}

/// A running (or stopped) instance.
pub struct Slapd {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

/// True when slapd is installed here.
pub fn available() -> bool {
    std::path::Path::new(SLAPD).exists() && std::path::Path::new(SLAPADD).exists()
}

impl Slapd {
    /// Starts an instance seeded with the base entries and `ldif`. `None`
    /// (after [`crate::skip_or_fail`]) when slapd is not installed.
    pub fn start_with(ldif: &str) -> Option<Slapd> {
        if !available() {
            crate::skip_or_fail(
                "OpenLDAP slapd",
                "not installed (apt-get install slapd ldap-utils)",
            );
            return None;
        }
        let tmp = tempfile::Builder::new()
            .prefix("idgov-slapd-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("data")).expect("data dir");
        std::fs::write(dir.join("slapd.conf"), conf(&dir)).expect("slapd.conf");
        std::fs::write(dir.join("seed.ldif"), format!("{}{ldif}", base_ldif())).expect("seed");
        let out = Command::new(SLAPADD)
            .args(["-q", "-f"])
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("seed.ldif"))
            .output()
            .expect("slapadd runs");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::free_port().expect("a free port");
        let mut s = Slapd {
            port,
            dir,
            child: None,
            _tmp: tmp,
        };
        s.start();
        Some(s)
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .env("SLAPD", SLAPD)
            .env("DIR", &self.dir)
            .env("PORT", self.port.to_string())
            .env("OWNER", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd watchdog starts");
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "slapd did not start: {}",
                std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (an outage); the data stays for [`Slapd::start`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
            let t = Instant::now();
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
