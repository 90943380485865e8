use super::*;
use crate::identity::{BackgroundCheck, EmploymentType};

pub(crate) const SAMPLE: &str = r#"
[hr]
time_zone = "Europe/Oslo"

[guard]
max_leavers_percent = 5
max_leavers = 500

[levels.internal]
review_every_months = 6

[[systems]]
id = "erp"
kind = "application"
owner = "E1"

[[systems]]
id = "hq"
kind = "physical_site"
owner = "E2"

[[entitlements]]
id = "erp.read"
system = "erp"
classification = "internal"
kind = "app_role"

[[entitlements]]
id = "erp.pay"
system = "erp"
classification = "confidential"
kind = "ldap_group"
ldap_group_dn = "cn=erp-pay,ou=groups,dc=example,dc=com"

[[entitlements]]
id = "erp.admin"
system = "erp"
classification = "restricted"
kind = "app_role"

[[entitlements]]
id = "hq.lobby"
system = "hq"
classification = "public"
kind = "physical_area"

[[roles]]
id = "staff"
entitlements = ["hq.lobby"]

[[roles]]
id = "finance"
entitlements = ["erp.read", "erp.pay"]

[[roles]]
id = "erp-admins"
entitlements = ["erp.admin"]

[[birthright]]
role = "staff"

[[birthright]]
role = "finance"
when = { department = "Finance" }
unless = { employment_type = "intern" }
"#;

fn violations(doc: &str) -> Vec<String> {
    match Policy::parse(doc) {
        Ok(_) => vec![],
        Err(e) => e
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect(),
    }
}

#[test]
fn sample_parses_with_defaults_and_overrides() -> Result<(), DomainError> {
    let p = Policy::parse(SAMPLE)?;
    assert_eq!(p.hr_time_zone, chrono_tz::Europe::Oslo);
    assert_eq!(p.level(Classification::Internal).review_every_months, 6);
    assert_eq!(p.level(Classification::Confidential).max_grant_days, 180);
    assert!(!p.level(Classification::Restricted).birthright_allowed);
    assert_eq!(
        p.entitlements["erp.read"].owner, "E1",
        "owner defaults to the system's"
    );
    Ok(())
}

#[test]
fn birthright_follows_rules() -> Result<(), DomainError> {
    let p = Policy::parse(SAMPLE)?;
    let mut a = Attributes::new_person(Classification::Internal);
    a.department = "Finance".into();
    a.background_check = BackgroundCheck::Cleared;
    let got: Vec<_> = p.birthright_for(&a).into_keys().collect();
    assert_eq!(got, ["erp.pay", "erp.read", "hq.lobby"]);
    a.employment_type = EmploymentType::Intern;
    let got: Vec<_> = p.birthright_for(&a).into_keys().collect();
    assert_eq!(got, ["hq.lobby"]);
    Ok(())
}

#[test]
fn unknown_entitlement_in_role_is_named() {
    let doc = SAMPLE.replace(r#"["erp.read", "erp.pay"]"#, r#"["erp.read", "erp.typo"]"#);
    assert_eq!(
        violations(&doc),
        [r#"roles[1] (finance).entitlements: unknown entitlement "erp.typo""#]
    );
}

#[test]
fn restricted_entitlement_in_birthright_role_is_named() {
    let doc =
        format!("{SAMPLE}\n[[birthright]]\nrole = \"erp-admins\"\nwhen = {{ title = \"CFO\" }}\n");
    let v = violations(&doc);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        v[0].starts_with("birthright[2] (role erp-admins).role: "),
        "{v:?}"
    );
    assert!(
        v[0].contains("restricted entitlement \"erp.admin\""),
        "{v:?}"
    );
}

#[test]
fn structural_problems_are_all_reported() {
    let doc = SAMPLE
        .replace(
            "time_zone = \"Europe/Oslo\"",
            "time_zone = \"Nowhere/Land\"",
        )
        .replace("role = \"staff\"", "role = \"stuff\"")
        .replace(
            "when = { department = \"Finance\" }",
            "when = { shoe_size = \"44\" }",
        )
        .replace(
            "ldap_group_dn = \"cn=erp-pay,ou=groups,dc=example,dc=com\"",
            "ldap_group_dn = \"not a dn\"",
        );
    let v = violations(&doc);
    assert_eq!(v.len(), 4, "{v:#?}");
    assert!(v.iter().any(|s| s.starts_with("hr.time_zone")));
    assert!(
        v.iter()
            .any(|s| s.starts_with("birthright[0] (role stuff).role"))
    );
    assert!(
        v.iter()
            .any(|s| s.starts_with("birthright[1] (role finance).shoe_size"))
    );
    assert!(
        v.iter()
            .any(|s| s.starts_with("entitlements[1] (erp.pay).ldap_group_dn"))
    );
}

#[test]
fn unknown_keys_and_bad_toml_name_the_line() {
    let v = violations("[hr]\ntime_zone = \"UTC\"\ncolour = \"blue\"\n");
    assert_eq!(v.len(), 1);
    assert!(v[0].starts_with("line 3"), "{v:?}");
    assert!(v[0].contains("colour"), "{v:?}");
}

#[test]
fn duplicate_ids_and_bad_levels() {
    let doc = format!(
        "{SAMPLE}\n[[roles]]\nid = \"staff\"\nentitlements = []\n[levels.secret]\non_mover = \"keep\"\n"
    );
    let v = violations(&doc);
    assert!(
        v.iter()
            .any(|s| s.contains("role id \"staff\" is defined twice")),
        "{v:?}"
    );
    assert!(v.iter().any(|s| s.starts_with("levels.secret")), "{v:?}");
}

#[test]
fn owners_must_be_active_identities() -> Result<(), DomainError> {
    let p = Policy::parse(SAMPLE)?;
    let err = p
        .check_owners(|id| match id {
            "E1" => Some(Status::Active),
            "E2" => Some(Status::Terminated),
            _ => None,
        })
        .err()
        .ok_or_else(|| DomainError::precondition("expected an error"))?;
    let fields: Vec<_> = err.violations.iter().map(|v| v.field.clone()).collect();
    assert_eq!(
        fields,
        ["systems (hq).owner", "entitlements (hq.lobby).owner"]
    );
    assert!(err.violations[0].description.contains("has left"));
    p.check_owners(|_| Some(Status::Active))?;
    Ok(())
}

#[test]
fn diff_names_changes() -> Result<(), DomainError> {
    let old = Policy::parse(SAMPLE)?;
    let new = Policy::parse(&SAMPLE.replace("review_every_months = 6", "review_every_months = 3"))?;
    let d = old.diff(&new);
    assert_eq!(d.changed_levels, ["internal"]);
    assert!(old.diff(&old).is_empty());
    Ok(())
}
