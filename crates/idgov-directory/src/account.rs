//! Creating accounts for joiners from a DN template and an attribute map.
//!
//! ```toml
//! [accounts]
//! create = true
//! dn = "uid={email_local},ou=people,dc=example,dc=com"
//! [accounts.attributes]
//! uid = "{email_local}"
//! cn = "{display_name}"
//! sn = "{family_name}"
//! givenName = "{given_name}"
//! mail = "{email}"
//! ```
//!
//! Placeholders name HR attributes (see [`PLACEHOLDERS`]); values placed in
//! the DN are escaped (RFC 4514). The object classes come from the preset and
//! the correlation attribute is always set to the employee id. No password
//! is set: accounts get their credentials through the organisation's usual
//! process.

use ldap3::dn_escape;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 11] = [
    "employee_id",
    "display_name",
    "given_name",
    "family_name",
    "email",
    "email_local",
    "department",
    "title",
    "job_code",
    "location",
    "cost_center",
];

/// The `[accounts]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountTemplate {
    #[serde(default)]
    pub create: bool,
    #[serde(default)]
    pub dn: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed {{ in {template:?}"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

fn fill(template: &str, values: &HashMap<&str, String>, escape_dn: bool) -> String {
    let mut s = template.to_string();
    for (k, v) in values {
        let v = if escape_dn {
            dn_escape(v.as_str()).into_owned()
        } else {
            v.clone()
        };
        s = s.replace(&format!("{{{k}}}"), &v);
    }
    s
}

/// Attributes an OpenLDAP or 389-ds schema defines as IA5String: ASCII
/// only. A non-ASCII value is refused by the directory (result 21).
pub const IA5_ATTRIBUTES: [&str; 3] = ["mail", "dc", "email"];

impl AccountTemplate {
    /// The placeholders whose values end up in an ASCII-only attribute of
    /// `preset`'s schema, with that attribute: their values must be ASCII,
    /// or the directory refuses the new account for good.
    pub fn ascii_only(&self, preset: crate::Preset) -> Vec<(String, String)> {
        if !self.create || preset == crate::Preset::ActiveDirectory {
            return vec![];
        }
        let mut out = Vec::new();
        for (attr, template) in &self.attributes {
            if IA5_ATTRIBUTES.iter().any(|a| a.eq_ignore_ascii_case(attr)) {
                for p in placeholders(template).unwrap_or_default() {
                    out.push((p.to_string(), attr.clone()));
                }
            }
        }
        out
    }

    /// Checks the template when account creation is on.
    pub fn validate(&self) -> Result<(), String> {
        if !self.create {
            return Ok(());
        }
        if self.dn.is_empty() {
            return Err("accounts.dn is required when accounts.create is true".into());
        }
        for t in std::iter::once(&self.dn).chain(self.attributes.values()) {
            for p in placeholders(t)? {
                if !PLACEHOLDERS.contains(&p) {
                    return Err(format!(
                        "unknown placeholder {{{p}}} in {t:?}; use one of {}",
                        PLACEHOLDERS.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The DN and attributes of a new account. Attributes that render empty
    /// are left out.
    pub fn render(&self, values: &HashMap<&str, String>) -> (String, Vec<(String, Vec<String>)>) {
        let dn = fill(&self.dn, values, true);
        let attrs = self
            .attributes
            .iter()
            .map(|(a, t)| (a.clone(), fill(t, values, false)))
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(a, v)| (a, vec![v]))
            .collect();
        (dn, attrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_escaped_dn_values() {
        let t = AccountTemplate {
            create: true,
            dn: "cn={display_name},ou=people,dc=x".into(),
            attributes: BTreeMap::from([
                ("cn".into(), "{display_name}".into()),
                ("title".into(), "{title}".into()),
            ]),
        };
        t.validate().unwrap_or_else(|e| panic!("{e}"));
        let values = HashMap::from([
            ("display_name", "Smith, John+Admin".to_string()),
            ("title", String::new()),
        ]);
        let (dn, attrs) = t.render(&values);
        assert_eq!(dn, r"cn=Smith\2c John\2bAdmin,ou=people,dc=x");
        assert_eq!(
            attrs,
            [("cn".to_string(), vec!["Smith, John+Admin".to_string()])],
            "empty title left out"
        );
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let t = AccountTemplate {
            create: true,
            dn: "uid={shoe_size},dc=x".into(),
            attributes: BTreeMap::new(),
        };
        let e = t.validate().err().unwrap_or_default();
        assert!(e.contains("{shoe_size}"), "{e}");
    }
}
