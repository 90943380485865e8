//! Reading a roster CSV into roster entries. The header names the columns;
//! `employee_id` and `display_name` are required, the others optional. A
//! column that is absent is not compared; a present but empty cell clears
//! text values (and the manager).

use idgov_proto::v1 as pb;
use std::collections::HashMap;

/// Known columns, in the order the example roster uses.
pub const COLUMNS: [&str; 15] = [
    "employee_id",
    "display_name",
    "email",
    "department",
    "title",
    "job_code",
    "location",
    "cost_center",
    "manager_employee_id",
    "employment_type",
    "background_check",
    "clearance",
    "start_date",
    "end_date",
    "background_check_date",
];

pub fn employment_type(s: &str) -> Result<pb::EmploymentType, String> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "" => pb::EmploymentType::Unspecified,
        "employee" => pb::EmploymentType::Employee,
        "contractor" => pb::EmploymentType::Contractor,
        "intern" => pb::EmploymentType::Intern,
        other => return Err(format!("{other:?} is not employee, contractor or intern")),
    })
}

pub fn background_check(s: &str) -> Result<pb::BackgroundCheck, String> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "" => pb::BackgroundCheck::Unspecified,
        "pending" => pb::BackgroundCheck::Pending,
        "cleared" => pb::BackgroundCheck::Cleared,
        "failed" => pb::BackgroundCheck::Failed,
        other => return Err(format!("{other:?} is not pending, cleared or failed")),
    })
}

pub fn classification(s: &str) -> Result<pb::Classification, String> {
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "" => pb::Classification::Unspecified,
        "public" => pb::Classification::Public,
        "internal" => pb::Classification::Internal,
        "confidential" => pb::Classification::Confidential,
        "restricted" => pb::Classification::Restricted,
        other => {
            return Err(format!(
                "{other:?} is not public, internal, confidential or restricted"
            ));
        }
    })
}

/// Parses a roster CSV. Every problem is reported with its line.
pub fn parse(data: &[u8]) -> Result<Vec<pb::RosterEntry>, Vec<String>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data);
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(vec![format!("cannot read the header line: {e}")]),
    };
    let mut errors = Vec::new();
    // An export from a spreadsheet set up for another locale: say so
    // rather than list every column as unknown.
    if headers.len() == 1
        && let Some(sep) = [';', '\t', '|']
            .into_iter()
            .find(|c| headers[0].contains(*c))
    {
        let name = if sep == '\t' {
            "tab".to_string()
        } else {
            format!("'{sep}'")
        };
        return Err(vec![format!(
            "line 1: the columns are separated by {name}; idgov reads comma-separated \
             values: export the roster as CSV with ',' between columns"
        )]);
    }
    let mut col: HashMap<&str, usize> = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        match COLUMNS.iter().find(|c| **c == h) {
            Some(c) => {
                if col.insert(c, i).is_some() {
                    errors.push(format!("line 1: column {h:?} appears twice"));
                }
            }
            None => errors.push(format!(
                "line 1: unknown column {h:?}; known columns are {}",
                COLUMNS.join(", ")
            )),
        }
    }
    for required in ["employee_id", "display_name"] {
        if !col.contains_key(required) {
            errors.push(format!(
                "line 1: the required column {required:?} is missing"
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = Vec::new();
    // Where the last record starts: a quoted field left open runs to the
    // end of the file, so only the last record can hide one.
    let mut last = (0usize, 1u64);
    let mut next_line = 2u64;
    for rec in rdr.records() {
        // Where the record starts (a quoted field may span lines).
        let at = match &rec {
            Ok(r) => r.position(),
            Err(e) => e.position(),
        };
        let line = at.map_or(next_line, |p| p.line());
        if let (Ok(_), Some(p)) = (&rec, at) {
            last = (usize::try_from(p.byte()).unwrap_or(usize::MAX), line);
        }
        next_line = line + 1;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("line {line}: {e}"));
                if errors.len() >= 20 {
                    break;
                }
                continue;
            }
        };
        let get = |name: &str| col.get(name).map(|i| rec.get(*i).unwrap_or("").to_string());
        let mut bad =
            |field: &str, e: String| errors.push(format!("line {line}, column {field}: {e}"));
        let mut a = pb::PersonAttributes {
            display_name: get("display_name"),
            email: get("email"),
            department: get("department"),
            title: get("title"),
            job_code: get("job_code"),
            location: get("location"),
            cost_center: get("cost_center"),
            manager_employee_id: get("manager_employee_id"),
            start_date: get("start_date").filter(|s| !s.is_empty()),
            // An empty end date is sent as such: the person has none.
            end_date: get("end_date"),
            background_check_date: get("background_check_date").filter(|s| !s.is_empty()),
            ..Default::default()
        };
        if let Some(v) = get("employment_type") {
            match employment_type(&v) {
                Ok(x) => a.employment_type = x as i32,
                Err(e) => bad("employment_type", e),
            }
        }
        if let Some(v) = get("background_check") {
            match background_check(&v) {
                Ok(x) => a.background_check = x as i32,
                Err(e) => bad("background_check", e),
            }
        }
        if let Some(v) = get("clearance") {
            match classification(&v) {
                Ok(x) => a.clearance = x as i32,
                Err(e) => bad("clearance", e),
            }
        }
        out.push(pb::RosterEntry {
            employee_id: get("employee_id").unwrap_or_default(),
            attributes: Some(a),
        });
        if errors.len() >= 20 {
            errors.push("more problems may follow; fix these first".into());
            break;
        }
    }
    if errors.len() < 20
        && let Some(tail) = data.get(last.0..)
        && ends_inside_quotes(tail)
    {
        errors.push(format!(
            "line {}: a quoted field opened here is never closed, so the rest of the file \
             was read as one value; the file may be cut short or have a stray '\"': \
             check the export",
            last.1
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// True when the CSV text `record` (one record and whatever follows it to
/// the end of the file) ends inside a quoted field. The `csv` crate reads
/// such a field to the end of the file without an error; a roster cut short
/// in the middle of a quoted name would otherwise import as if whole.
fn ends_inside_quotes(record: &[u8]) -> bool {
    #[derive(PartialEq)]
    enum S {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut s = S::FieldStart;
    for &b in record {
        s = match (s, b) {
            (S::Quoted, b'"') => S::QuoteInQuoted,
            (S::Quoted, _) => S::Quoted,
            (S::QuoteInQuoted, b'"') => S::Quoted,
            (S::FieldStart, b'"') => S::Quoted,
            (_, b',') => S::FieldStart,
            // The record ends: anything after it was read as later records.
            (_, b'\n' | b'\r') => return false,
            _ => S::Unquoted,
        };
    }
    s == S::Quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_roster() {
        let csv = "employee_id,display_name,department,manager_employee_id,clearance\n\
                   E1,Ada Lovelace,Finance,,confidential\n\
                   E2, Bob ,Sales,E1,\n";
        let rows = parse(csv.as_bytes()).unwrap_or_default();
        assert_eq!(rows.len(), 2);
        let a = rows[0].attributes.clone().unwrap_or_default();
        assert_eq!(a.manager_employee_id.as_deref(), Some(""));
        assert_eq!(a.clearance, pb::Classification::Confidential as i32);
        assert_eq!(a.email, None, "an absent column is not sent");
        let rows = parse(b"employee_id,display_name,start_date,end_date\nE1,Ada,,\nE2,Bob,2026-01-05,2026-09-30\n")
            .unwrap_or_default();
        let a = rows[0].attributes.clone().unwrap_or_default();
        assert_eq!(
            a.end_date.as_deref(),
            Some(""),
            "an empty end date takes it away"
        );
        assert_eq!(
            a.start_date, None,
            "an empty start date keeps the one known"
        );
        let b = rows[1].attributes.clone().unwrap_or_default();
        assert_eq!(b.end_date.as_deref(), Some("2026-09-30"));
        assert_eq!(
            rows[1]
                .attributes
                .clone()
                .unwrap_or_default()
                .display_name
                .as_deref(),
            Some("Bob")
        );
    }

    #[test]
    fn malformed_rosters_name_lines_and_columns() {
        let errs = parse(b"employee_id,shoe_size\nE1,44\n")
            .err()
            .unwrap_or_default();
        assert!(
            errs.iter()
                .any(|e| e.contains("unknown column \"shoe_size\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("\"display_name\" is missing")),
            "{errs:?}"
        );
        let errs = parse(b"employee_id,display_name,clearance\nE1,A,secret\nE2,B\n")
            .err()
            .unwrap_or_default();
        assert!(errs[0].starts_with("line 2, column clearance"), "{errs:?}");
        assert!(errs[1].starts_with("line 3"), "{errs:?}");
    }

    /// A file separated by semicolons or tabs is refused with one plain
    /// error naming the separator.
    #[test]
    fn another_separator_is_named() {
        for (csv, name) in [
            ("employee_id;display_name\nE1;Ada\n", "';'"),
            ("employee_id\tdisplay_name\nE1\tAda\n", "tab"),
        ] {
            let errs = parse(csv.as_bytes()).err().unwrap_or_default();
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].contains(&format!("separated by {name}")),
                "{errs:?}"
            );
        }
    }

    /// A roster cut short inside a quoted field is refused, not read as a
    /// last person whose name runs to the end of the file.
    #[test]
    fn a_quoted_field_left_open_is_refused() {
        for (csv, line) in [
            ("employee_id,display_name\nE1,Ada\nE2,\"Bob\n", 3),
            (
                "employee_id,display_name\nE1,Ada\nE2,\"Bob\nE3,Cy\nE4,Di",
                3,
            ),
            (
                "employee_id,display_name\nE1,\"Ada \"\"A\"\" L\nE2,Bob\n",
                2,
            ),
            ("employee_id,\"display_name\n", 1),
            ("\u{feff}employee_id,display_name\nE1,Ada\nE2,\"Bob\n", 3),
        ] {
            let errs = parse(csv.as_bytes()).err().unwrap_or_default();
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&format!("line {line}: a quoted field"))
                        && e.contains("never closed")),
                "{csv:?}: {errs:?}"
            );
        }
        // Closed quotes, escaped quotes, a name over two lines, quotes in
        // the last field and no final newline are all fine.
        for csv in [
            "employee_id,display_name\nE1,\"Lovelace, Ada\"\nE2,\"Bob \"\"B\"\"\"\n",
            "employee_id,display_name\nE1,\"Ada\"",
            "employee_id,display_name\r\nE1,\"Ada\"\r\n",
            "employee_id,display_name,title\nE1,Ada,\"Head, \"\"Ops\"\"\"\n\n",
            "\u{feff}employee_id,display_name\nE1,\"Lovelace, \"\"Ada\"\"\"\n",
        ] {
            assert!(
                parse(csv.as_bytes()).is_ok(),
                "{csv:?}: {:?}",
                parse(csv.as_bytes())
            );
        }
        // Lines are counted as the file has them, across a quoted line break.
        let errs = parse(b"employee_id,display_name,clearance\nE1,\"A\nB\",public\nE2,C,secret\n")
            .err()
            .unwrap_or_default();
        assert!(errs[0].starts_with("line 4, column clearance"), "{errs:?}");
    }
}
