//! Identities: people keyed by their HR employee id, their attributes,
//! lifecycle status and the access ceiling the hard rules give them.

use crate::Classification;
use crate::error::FieldViolation;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use crate::history::History;

string_enum!(
    /// Lifecycle status: `pre_hire → active ↔ suspended → terminated`, and
    /// `terminated → active` on rehire.
    Status { PreHire => "pre_hire", Active => "active", Suspended => "suspended", Terminated => "terminated" }
);

string_enum!(
    /// Kind of employment; contractors never hold `restricted` entitlements.
    EmploymentType { Employee => "employee", Contractor => "contractor", Intern => "intern" }
);

string_enum!(
    /// Background-check state; nothing above `public` until `cleared`.
    BackgroundCheck { Pending => "pending", Cleared => "cleared", Failed => "failed" }
);

/// The HR attributes of a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub display_name: String,
    pub email: String,
    pub department: String,
    pub title: String,
    pub job_code: String,
    pub location: String,
    pub cost_center: String,
    pub manager_id: Option<String>,
    pub employment_type: EmploymentType,
    pub background_check: BackgroundCheck,
    pub clearance: Classification,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    /// When the background check was completed, as HR reports it. After a
    /// rehire a clearance counts only when dated on or after the new start.
    #[serde(default)]
    pub background_check_date: Option<NaiveDate>,
}

impl Attributes {
    /// Attributes of a new person before any HR data: the safe defaults
    /// (background check pending, clearance as configured).
    pub fn new_person(default_clearance: Classification) -> Self {
        Self {
            display_name: String::new(),
            email: String::new(),
            department: String::new(),
            title: String::new(),
            job_code: String::new(),
            location: String::new(),
            cost_center: String::new(),
            manager_id: None,
            employment_type: EmploymentType::Employee,
            background_check: BackgroundCheck::Pending,
            clearance: default_clearance,
            start_date: None,
            end_date: None,
            background_check_date: None,
        }
    }

    /// The value of a birthright-rule attribute, by its policy name.
    pub fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "department" => &self.department,
            "title" => &self.title,
            "job_code" => &self.job_code,
            "location" => &self.location,
            "cost_center" => &self.cost_center,
            "employment_type" => self.employment_type.as_str(),
            _ => return None,
        })
    }

    /// The highest classification this person may hold under the hard rules:
    /// `public` until the background check is cleared, never above the
    /// clearance, never `restricted` for a contractor.
    pub fn access_ceiling(&self) -> Classification {
        if self.background_check != BackgroundCheck::Cleared {
            return Classification::Public;
        }
        let mut ceiling = self.clearance;
        if self.employment_type == EmploymentType::Contractor {
            ceiling = ceiling.min(Classification::Confidential);
        }
        ceiling
    }
}

/// Attribute names whose change makes a person a mover.
pub const MOVER_FIELDS: [&str; 4] = ["department", "title", "job_code", "manager_id"];

/// A partial set of attributes, as carried by an HR event. `None` keeps the
/// current value; `manager_id: Some(None)` clears the manager.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributesPatch {
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub department: Option<String>,
    pub title: Option<String>,
    pub job_code: Option<String>,
    pub location: Option<String>,
    pub cost_center: Option<String>,
    /// Stored (JSON) as `null` to keep the manager and `""` to clear it
    /// (see [`cleared_manager`]).
    #[serde(default, with = "cleared_manager")]
    pub manager_id: Option<Option<String>>,
    pub employment_type: Option<EmploymentType>,
    pub background_check: Option<BackgroundCheck>,
    pub clearance: Option<Classification>,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    #[serde(default)]
    pub background_check_date: Option<NaiveDate>,
    /// Takes the end date away (an empty `end_date` sent): a contractor
    /// made permanent, an end date entered by mistake, a roster that lists
    /// the person without one. Absent from the stored form when false, so
    /// patches stored before it read and fingerprint as they did.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clear_end_date: bool,
}

/// The stored form of a patch's manager: `null` keeps the current manager,
/// `""` clears it, an id sets it. Plain serde wrote both "keep" and
/// "clear" as `null`, so a stored event that cleared a manager (an HR event
/// with an empty manager id, a roster entry without one) read back as one
/// that kept it: a replay after a late event, a held roster's release and a
/// resumed roster sync brought the old manager back. Patches stored that
/// way still read as "keep", as they always did.
mod cleared_manager {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(None) => s.serialize_str(""),
            Some(Some(m)) => s.serialize_str(m),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(|m| (!m.is_empty()).then_some(m)))
    }
}

/// One attribute that differs between two attribute sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: String,
    pub new: String,
}

fn opt_date(d: Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

impl AttributesPatch {
    /// Returns `base` with this patch applied.
    pub fn apply_to(&self, base: &Attributes) -> Attributes {
        let mut a = base.clone();
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = &self.$f { a.$f = v.clone(); })* };
        }
        set!(
            display_name,
            email,
            department,
            title,
            job_code,
            location,
            cost_center,
            manager_id
        );
        macro_rules! set_copy {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { a.$f = v; })* };
        }
        set_copy!(employment_type, background_check, clearance);
        if self.start_date.is_some() {
            a.start_date = self.start_date;
        }
        if self.clear_end_date {
            a.end_date = None;
        }
        if self.end_date.is_some() {
            a.end_date = self.end_date;
        }
        if self.background_check_date.is_some() {
            a.background_check_date = self.background_check_date;
        }
        a
    }

    /// True when the patch sets no attribute at all.
    pub fn is_empty(&self) -> bool {
        self == &AttributesPatch::default()
    }

    /// Checks the values that have a shape: names, email, manager.
    pub fn validate(&self, prefix: &str, employee_id: &str) -> Vec<FieldViolation> {
        let mut v = Vec::new();
        let texts = [
            ("display_name", &self.display_name, 200),
            ("email", &self.email, 254),
            ("department", &self.department, 200),
            ("title", &self.title, 200),
            ("job_code", &self.job_code, 64),
            ("location", &self.location, 200),
            ("cost_center", &self.cost_center, 64),
        ];
        for (name, value, max) in texts {
            if let Some(s) = value
                && let Some(problem) = text_problem(s, max)
            {
                v.push(FieldViolation::new(format!("{prefix}.{name}"), problem));
            }
        }
        if let Some(email) = &self.email
            && !email.is_empty()
            && text_problem(email, 254).is_none()
            && !looks_like_email(email)
        {
            v.push(FieldViolation::new(
                format!("{prefix}.email"),
                format!("{} is not an email address", crate::error::echo(email)),
            ));
        }
        if let Some(Some(m)) = &self.manager_id {
            if let Err(e) = validate_employee_id(m) {
                v.push(FieldViolation::new(
                    format!("{prefix}.manager_employee_id"),
                    e,
                ));
            } else if m == employee_id {
                v.push(FieldViolation::new(
                    format!("{prefix}.manager_employee_id"),
                    "a person cannot be their own manager",
                ));
            }
        }
        for (field, date) in [
            ("start_date", self.start_date),
            ("end_date", self.end_date),
            ("background_check_date", self.background_check_date),
        ] {
            if let Some(problem) =
                date.and_then(|d| crate::time::implausible_year(chrono::Datelike::year(&d), d))
            {
                v.push(FieldViolation::new(format!("{prefix}.{field}"), problem));
            }
        }
        if let (Some(s), Some(e)) = (self.start_date, self.end_date)
            && e < s
        {
            v.push(FieldViolation::new(
                format!("{prefix}.end_date"),
                format!("end date {e} is before start date {s}"),
            ));
        }
        v
    }
}

/// Lists the attributes that differ between `old` and `new`.
pub fn diff_attributes(old: &Attributes, new: &Attributes) -> Vec<FieldChange> {
    let pairs: [(&str, String, String); 14] = [
        (
            "display_name",
            old.display_name.clone(),
            new.display_name.clone(),
        ),
        ("email", old.email.clone(), new.email.clone()),
        ("department", old.department.clone(), new.department.clone()),
        ("title", old.title.clone(), new.title.clone()),
        ("job_code", old.job_code.clone(), new.job_code.clone()),
        ("location", old.location.clone(), new.location.clone()),
        (
            "cost_center",
            old.cost_center.clone(),
            new.cost_center.clone(),
        ),
        (
            "manager_id",
            old.manager_id.clone().unwrap_or_default(),
            new.manager_id.clone().unwrap_or_default(),
        ),
        (
            "employment_type",
            old.employment_type.to_string(),
            new.employment_type.to_string(),
        ),
        (
            "background_check",
            old.background_check.to_string(),
            new.background_check.to_string(),
        ),
        (
            "clearance",
            old.clearance.to_string(),
            new.clearance.to_string(),
        ),
        (
            "start_date",
            opt_date(old.start_date),
            opt_date(new.start_date),
        ),
        ("end_date", opt_date(old.end_date), opt_date(new.end_date)),
        (
            "background_check_date",
            opt_date(old.background_check_date),
            opt_date(new.background_check_date),
        ),
    ];
    pairs
        .into_iter()
        .filter(|(_, o, n)| o != n)
        .map(|(f, o, n)| FieldChange {
            field: f.to_string(),
            old: o,
            new: n,
        })
        .collect()
}

/// True when a change of these fields makes the person a mover.
pub fn is_move(changes: &[FieldChange]) -> bool {
    changes
        .iter()
        .any(|c| MOVER_FIELDS.contains(&c.field.as_str()))
}

/// A person known to idgov.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub employee_id: String,
    pub attrs: Attributes,
    pub status: Status,
    /// Effective time of the newest attribute state applied.
    pub attrs_effective_at: DateTime<Utc>,
    /// Effective time of the newest status change applied.
    pub status_effective_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the person's HR history left behind that the attributes do not
    /// show: the newest event folded in, the employment, the zone of the
    /// end date, the background check as reported, the last roster presence.
    #[serde(default)]
    pub history: History,
}

impl Identity {
    /// The newest effective time of any state applied to this person.
    pub fn state_effective_at(&self) -> DateTime<Utc> {
        self.attrs_effective_at.max(self.status_effective_at)
    }

    /// SHA-256 of the attributes (the basis of a hand revocation).
    pub fn attrs_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_string(&self.attrs).unwrap_or_default();
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// True when the person may hold grants at all.
    pub fn may_hold_access(&self) -> bool {
        matches!(self.status, Status::Active | Status::Suspended)
    }
}

/// Validates an HR employee id: 1–64 characters of letters, digits, `.`,
/// `_`, `-`, `@` or `+`. The narrow alphabet keeps ids safe in LDAP names,
/// filters, logs and file names.
pub fn validate_employee_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("employee id is required".into());
    }
    if id.len() > 64 {
        return Err(format!(
            "employee id is {} characters long; at most 64",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+')))
    {
        return Err(format!(
            "employee id {} contains {c:?}; use letters, digits, '.', '_', '-', '@' or '+'",
            crate::error::echo(id)
        ));
    }
    Ok(())
}

/// Describes what is wrong with a free-text attribute, if anything.
pub fn text_problem(s: &str, max: usize) -> Option<String> {
    if s.chars().count() > max {
        return Some(format!("is longer than {max} characters"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Some("contains control characters".into());
    }
    // Bidirectional embeddings, overrides and isolates make text display
    // as something else than it is ("Trojan Source").
    if s.chars()
        .any(|c| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    {
        return Some("contains bidirectional control characters".into());
    }
    if s.trim() != s {
        return Some("has leading or trailing whitespace".into());
    }
    None
}

/// [`text_problem`] for optional text: empty is fine.
pub fn optional_text_problem(s: &str, max: usize) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        text_problem(s, max)
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !s.contains(' ')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_patch_keeps_clearing_a_manager_apart_from_keeping_one() {
        for m in [None, Some(None), Some(Some("M1".to_string()))] {
            let p = AttributesPatch {
                manager_id: m.clone(),
                ..Default::default()
            };
            let json = serde_json::to_string(&p).unwrap_or_default();
            let back: Result<AttributesPatch, _> = serde_json::from_str(&json);
            assert_eq!(back.ok().map(|b| b.manager_id), Some(m), "{json}");
        }
        // Stored before: `null` and a missing field keep the manager.
        for old in [r#"{"manager_id":null}"#, "{}"] {
            let back: Result<AttributesPatch, _> = serde_json::from_str(old);
            assert_eq!(back.ok().map(|b| b.manager_id), Some(None), "{old}");
        }
    }

    fn cleared(clearance: Classification, kind: EmploymentType) -> Attributes {
        Attributes {
            background_check: BackgroundCheck::Cleared,
            clearance,
            employment_type: kind,
            ..Attributes::new_person(Classification::Internal)
        }
    }

    #[test]
    fn nothing_above_public_until_cleared() {
        let mut a = cleared(Classification::Restricted, EmploymentType::Employee);
        assert_eq!(a.access_ceiling(), Classification::Restricted);
        a.background_check = BackgroundCheck::Pending;
        assert_eq!(a.access_ceiling(), Classification::Public);
        a.background_check = BackgroundCheck::Failed;
        assert_eq!(a.access_ceiling(), Classification::Public);
    }

    #[test]
    fn contractors_never_reach_restricted() {
        let a = cleared(Classification::Restricted, EmploymentType::Contractor);
        assert_eq!(a.access_ceiling(), Classification::Confidential);
        let b = cleared(Classification::Internal, EmploymentType::Contractor);
        assert_eq!(b.access_ceiling(), Classification::Internal);
    }

    #[test]
    fn employee_ids_are_narrow() {
        assert!(validate_employee_id("E1001").is_ok());
        assert!(validate_employee_id("a.b-c_d@x+1").is_ok());
        for bad in [
            "",
            "*)(uid=*",
            "cn=x,dc=evil",
            " E1",
            "E\u{0}1",
            "Ærlig",
            "#1",
        ] {
            assert!(validate_employee_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patch_applies_and_clears_manager() {
        let base = Attributes {
            manager_id: Some("M1".into()),
            department: "Sales".into(),
            ..Attributes::new_person(Classification::Internal)
        };
        let patch = AttributesPatch {
            manager_id: Some(None),
            department: Some("Finance".into()),
            ..Default::default()
        };
        let new = patch.apply_to(&base);
        assert_eq!(new.manager_id, None);
        assert_eq!(new.department, "Finance");
        let changes = diff_attributes(&base, &new);
        assert!(is_move(&changes));
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn patch_validation_names_fields() {
        let patch = AttributesPatch {
            email: Some("not-an-email".into()),
            display_name: Some(" padded".into()),
            manager_id: Some(Some("E1".into())),
            ..Default::default()
        };
        let v = patch.validate("event.attributes", "E1");
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "event.attributes.display_name",
                "event.attributes.email",
                "event.attributes.manager_employee_id"
            ]
        );
    }
}
