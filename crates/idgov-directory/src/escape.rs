//! Every DN and filter value idgov builds from data goes through here.
//! Values are escaped with ldap3's RFC 4514 (`dn_escape`) and RFC 4515
//! (`ldap_escape`) implementations; nothing is spliced in raw.

use ldap3::{dn_escape, ldap_escape};

/// A filter `(attr=value)` matching `value` literally.
pub fn eq_filter(attr: &str, value: &str) -> String {
    format!("({attr}={})", ldap_escape(value))
}

/// The DN `attr=value,parent` with `value` escaped as an RDN value.
pub fn child_dn(attr: &str, value: &str, parent: &str) -> String {
    format!("{attr}={},{parent}", dn_escape(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_cannot_break_out() {
        assert_eq!(eq_filter("uid", "*)(uid=*"), r"(uid=\2a\29\28uid=\2a)");
        assert_eq!(eq_filter("cn", "a\\b\0c"), r"(cn=a\5cb\00c)");
        assert_eq!(eq_filter("cn", "Ærlig Øst"), "(cn=Ærlig Øst)");
    }

    #[test]
    fn dn_values_cannot_add_components() {
        let base = "ou=people,dc=example,dc=com";
        assert_eq!(
            child_dn("uid", "cn=x,dc=evil", base),
            r"uid=cn\3dx\2cdc\3devil,ou=people,dc=example,dc=com"
        );
        assert_eq!(
            child_dn("uid", "#lead", base),
            r"uid=\23lead,ou=people,dc=example,dc=com"
        );
        assert_eq!(
            child_dn("uid", " pad ", base),
            r"uid=\20pad\20,ou=people,dc=example,dc=com"
        );
        assert_eq!(
            child_dn("uid", "a+b;c\"d<e>f\\g", base),
            r#"uid=a\2bb\3bc\22d\3ce\3ef\5cg,ou=people,dc=example,dc=com"#
        );
    }
}
