//! A roster's entries held packed: every text of every entry in one
//! buffer, and per entry one fixed-size slot (where its texts end, which
//! are given, its enums and dates). A million-person roster is held while
//! it is validated, diffed and staged; decoded, each entry would be a
//! struct of 232 bytes plus an allocation per text, packed it is a slot of
//! 64 bytes plus its text. An entry is decoded when it is used, one at a
//! time.

use crate::Classification;
use crate::identity::{AttributesPatch, BackgroundCheck, EmploymentType};
use crate::roster::RosterEntry;
use chrono::NaiveDate;

/// The texts of an entry, in this order in the buffer.
const EMPLOYEE_ID: usize = 0;
const DISPLAY_NAME: usize = 1;
const EMAIL: usize = 2;
const DEPARTMENT: usize = 3;
const TITLE: usize = 4;
const JOB_CODE: usize = 5;
const LOCATION: usize = 6;
const COST_CENTER: usize = 7;
const MANAGER: usize = 8;
const TEXTS: usize = 9;

/// Bit `i` of [`Slot::given`]: text `i` is given (`Some`); the manager's
/// bit says the manager column is given at all, and [`MANAGER_SET`] that
/// it names someone (`Some(Some(_))`, not cleared).
const MANAGER_SET: u16 = 1 << TEXTS;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Where the entry's texts start in [`PackedRoster::text`].
    start: usize,
    /// Where each text ends, from `start`.
    ends: [u32; TEXTS],
    given: u16,
    clear_end_date: bool,
    employment_type: Option<EmploymentType>,
    background_check: Option<BackgroundCheck>,
    clearance: Option<Classification>,
    start_date: Option<NaiveDate>,
    end_date: Option<NaiveDate>,
    background_check_date: Option<NaiveDate>,
}

/// A roster's entries, in the roster's order (see the module's doc).
#[derive(Debug, Clone, Default)]
pub struct PackedRoster {
    text: String,
    slots: Vec<Slot>,
}

impl PackedRoster {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds `e` after the entries already held.
    pub fn push(&mut self, e: RosterEntry) {
        // Every field named, none left to `..`: a field added to the patch
        // does not compile until it is packed too.
        let AttributesPatch {
            display_name,
            email,
            department,
            title,
            job_code,
            location,
            cost_center,
            manager_id,
            employment_type,
            background_check,
            clearance,
            start_date,
            end_date,
            background_check_date,
            clear_end_date,
        } = e.attrs;
        let start = self.text.len();
        let mut ends = [0u32; TEXTS];
        let mut given = 0u16;
        let texts: [(usize, Option<&str>); TEXTS] = [
            (EMPLOYEE_ID, Some(e.employee_id.as_str())),
            (DISPLAY_NAME, display_name.as_deref()),
            (EMAIL, email.as_deref()),
            (DEPARTMENT, department.as_deref()),
            (TITLE, title.as_deref()),
            (JOB_CODE, job_code.as_deref()),
            (LOCATION, location.as_deref()),
            (COST_CENTER, cost_center.as_deref()),
            (
                MANAGER,
                manager_id.as_ref().map(|m| m.as_deref().unwrap_or("")),
            ),
        ];
        for (i, t) in texts {
            if let Some(t) = t {
                given |= 1 << i;
                self.text.push_str(t);
            }
            // An entry's texts come from one message of a few megabytes
            // at most: their length fits in 32 bits.
            ends[i] = u32::try_from(self.text.len() - start).unwrap_or(u32::MAX);
        }
        if matches!(manager_id, Some(Some(_))) {
            given |= MANAGER_SET;
        }
        self.slots.push(Slot {
            start,
            ends,
            given,
            clear_end_date,
            employment_type,
            background_check,
            clearance,
            start_date,
            end_date,
            background_check_date,
        });
    }

    /// Text `i` of entry `at` (empty when not given).
    fn text(&self, at: usize, i: usize) -> &str {
        let s = &self.slots[at];
        let from = if i == 0 { 0 } else { s.ends[i - 1] as usize };
        self.text
            .get(s.start + from..s.start + s.ends[i] as usize)
            .unwrap_or("")
    }

    fn given(&self, at: usize, i: usize) -> Option<String> {
        (self.slots[at].given & (1 << i) != 0).then(|| self.text(at, i).to_string())
    }

    /// The employee id of entry `at`, without decoding the entry.
    pub fn employee_id(&self, at: usize) -> &str {
        self.text(at, EMPLOYEE_ID)
    }

    /// The manager column of entry `at`, as in [`AttributesPatch`]: `None`
    /// when absent (the manager is kept), `Some(None)` when cleared.
    pub fn manager_id(&self, at: usize) -> Option<Option<&str>> {
        let given = self.slots[at].given;
        (given & (1 << MANAGER) != 0)
            .then(|| (given & MANAGER_SET != 0).then(|| self.text(at, MANAGER)))
    }

    /// Entry `at`, decoded.
    pub fn get(&self, at: usize) -> RosterEntry {
        let s = self.slots[at];
        RosterEntry {
            employee_id: self.employee_id(at).to_string(),
            attrs: AttributesPatch {
                display_name: self.given(at, DISPLAY_NAME),
                email: self.given(at, EMAIL),
                department: self.given(at, DEPARTMENT),
                title: self.given(at, TITLE),
                job_code: self.given(at, JOB_CODE),
                location: self.given(at, LOCATION),
                cost_center: self.given(at, COST_CENTER),
                manager_id: self.manager_id(at).map(|m| m.map(str::to_string)),
                employment_type: s.employment_type,
                background_check: s.background_check,
                clearance: s.clearance,
                start_date: s.start_date,
                end_date: s.end_date,
                background_check_date: s.background_check_date,
                clear_end_date: s.clear_end_date,
            },
        }
    }

    /// Every entry, decoded one at a time, in the roster's order.
    pub fn iter(&self) -> impl Iterator<Item = RosterEntry> + '_ {
        (0..self.len()).map(|at| self.get(at))
    }

    /// The bytes held: the texts and the slots (what a bench reports).
    pub fn held_bytes(&self) -> usize {
        self.text.capacity() + self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

impl FromIterator<RosterEntry> for PackedRoster {
    fn from_iter<I: IntoIterator<Item = RosterEntry>>(iter: I) -> Self {
        let mut r = PackedRoster::new();
        for e in iter {
            r.push(e);
        }
        r
    }
}

impl From<Vec<RosterEntry>> for PackedRoster {
    fn from(entries: Vec<RosterEntry>) -> Self {
        entries.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(id: &str, manager: Option<Option<&str>>) -> RosterEntry {
        RosterEntry {
            employee_id: id.into(),
            attrs: AttributesPatch {
                display_name: Some(format!("Ünïcödé {id}")),
                email: Some(String::new()),
                department: Some("Finance".into()),
                title: None,
                job_code: Some("J1".into()),
                location: None,
                cost_center: Some("漢字".into()),
                manager_id: manager.map(|m| m.map(str::to_string)),
                employment_type: Some(EmploymentType::Contractor),
                background_check: Some(BackgroundCheck::Cleared),
                clearance: Some(Classification::Confidential),
                start_date: NaiveDate::from_ymd_opt(2026, 1, 2),
                end_date: None,
                background_check_date: NaiveDate::from_ymd_opt(2025, 12, 31),
                clear_end_date: true,
            },
        }
    }

    #[test]
    fn the_sizes_the_module_doc_gives() {
        assert_eq!(std::mem::size_of::<RosterEntry>(), 232);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn every_entry_comes_back_as_it_was_pushed() {
        let entries = vec![
            full("A", None),
            full("B", Some(None)),
            full("C", Some(Some("A"))),
            RosterEntry {
                employee_id: "D".into(),
                attrs: AttributesPatch::default(),
            },
            full("E", Some(Some(""))),
        ];
        let packed = PackedRoster::from(entries.clone());
        assert_eq!(packed.len(), 5);
        assert_eq!(packed.iter().collect::<Vec<_>>(), entries);
        assert_eq!(packed.employee_id(2), "C");
        assert_eq!(packed.manager_id(0), None);
        assert_eq!(packed.manager_id(1), Some(None));
        assert_eq!(packed.manager_id(2), Some(Some("A")));
        // A patch given an empty text keeps it apart from one not given.
        assert_eq!(packed.get(0).attrs.email, Some(String::new()));
        assert_eq!(packed.get(0).attrs.title, None);
    }

    #[test]
    fn a_packed_entry_with_its_texts_takes_less_than_a_decoded_one_without_them() {
        let packed: PackedRoster = (0..1000).map(|i| full(&format!("E{i:06}"), None)).collect();
        // The decoded structs alone, before the allocation of each text.
        let decoded = std::mem::size_of::<RosterEntry>() * 1000;
        assert!(
            packed.held_bytes() < decoded,
            "{} bytes packed against {decoded} for the decoded structs alone",
            packed.held_bytes()
        );
    }
}
