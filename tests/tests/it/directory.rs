//! Directory operations against a real OpenLDAP `slapd` with ppolicy.

use idgov_directory::client::Connection;
use idgov_directory::escape::child_dn;
use idgov_directory::{Directory, DirectoryError, Preset};
use idgov_tests::slapd::{ADMIN_DN, ADMIN_PW, BASE, GROUPS, PEOPLE, Slapd};
use std::time::Duration;

fn people_ldif() -> String {
    format!(
        "dn: uid=ada,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: ada\ncn: Ada Lovelace\nsn: Lovelace\n\
         employeeNumber: E1\nuserPassword: ada-password\n\n\
         dn: uid=bob,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: Bob\nemployeeNumber: E2\n\n\
         dn: cn=finance,{GROUPS}\nobjectClass: groupOfNames\ncn: finance\nmember: uid=bob,{PEOPLE}\n\n"
    )
}

async fn admin(s: &Slapd) -> Directory {
    let c = Connection {
        url: s.url(),
        starttls: false,
        bind_dn: ADMIN_DN.into(),
        password: ADMIN_PW.into(),
        timeout: Duration::from_secs(5),
        op_timeout: Duration::from_secs(5),
        keepalive: Duration::from_secs(30),
    };
    Directory::connect(&c, Preset::Openldap.schema())
        .await
        .expect("admin binds")
}

#[tokio::test]
async fn a_disabled_account_cannot_bind_until_enabled() {
    let Some(s) = Slapd::start_with(&people_ldif()) else {
        return;
    };
    let mut d = admin(&s).await;
    let ada = d
        .find_account(PEOPLE, "E1")
        .await
        .unwrap()
        .expect("ada found by employeeNumber");
    assert_eq!(ada, format!("uid=ada,{PEOPLE}"));
    assert!(
        Directory::can_bind(&s.url(), &ada, "ada-password")
            .await
            .unwrap()
    );
    assert!(d.disable(&ada).await.unwrap(), "disabled now");
    assert!(
        !d.disable(&ada).await.unwrap(),
        "disabling again is a no-op"
    );
    assert!(d.is_disabled(&ada).await.unwrap());
    assert!(
        !Directory::can_bind(&s.url(), &ada, "ada-password")
            .await
            .unwrap(),
        "the lock is enforced"
    );
    assert!(d.enable(&ada).await.unwrap());
    assert!(!d.enable(&ada).await.unwrap(), "enabling again is a no-op");
    assert!(
        Directory::can_bind(&s.url(), &ada, "ada-password")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn membership_changes_are_idempotent() {
    let Some(s) = Slapd::start_with(&people_ldif()) else {
        return;
    };
    let mut d = admin(&s).await;
    let group = format!("cn=finance,{GROUPS}");
    let ada = format!("uid=ada,{PEOPLE}");
    assert!(d.add_member(&group, &ada).await.unwrap());
    assert!(
        !d.add_member(&group, &ada).await.unwrap(),
        "already a member counts as done"
    );
    assert_eq!(
        d.groups_of(GROUPS, &ada).await.unwrap(),
        std::slice::from_ref(&group)
    );
    assert!(d.remove_member(&group, &ada).await.unwrap());
    assert!(
        !d.remove_member(&group, &ada).await.unwrap(),
        "already absent counts as done"
    );
    assert!(d.groups_of(GROUPS, &ada).await.unwrap().is_empty());
    let missing = d.disable(&format!("uid=nobody,{PEOPLE}")).await;
    assert!(
        matches!(missing, Err(DirectoryError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn hostile_values_neither_break_out_nor_crash() {
    let Some(s) = Slapd::start_with(&people_ldif()) else {
        return;
    };
    let mut d = admin(&s).await;
    let hostile = [
        "*)(uid=*",
        "cn=x,dc=evil",
        "#lead",
        " padded ",
        "back\\slash",
        "nul\0byte",
        "Ærlig Øst",
        "*",
    ];
    let group = format!("cn=finance,{GROUPS}");
    for (i, v) in hostile.iter().enumerate() {
        let dn = child_dn("uid", v, PEOPLE);
        let created = d
            .add_entry(
                &dn,
                vec![
                    ("objectClass".into(), vec!["inetOrgPerson".into()]),
                    ("cn".into(), vec![format!("hostile {i}")]),
                    ("sn".into(), vec!["hostile".into()]),
                    ("employeeNumber".into(), vec![v.to_string()]),
                ],
            )
            .await;
        match created {
            Ok(()) => {
                // It landed where intended, under ou=people, and nowhere else.
                assert!(dn.ends_with(&format!(",{PEOPLE}")), "{dn}");
                let found = d.find_account(BASE, v).await.unwrap();
                assert_eq!(
                    found.as_deref().map(str::to_lowercase),
                    Some(dn.to_lowercase()),
                    "{v:?}"
                );
                assert!(d.add_member(&group, &dn).await.unwrap());
                assert_eq!(
                    d.groups_of(GROUPS, &dn).await.unwrap(),
                    std::slice::from_ref(&group)
                );
                assert!(d.remove_member(&group, &dn).await.unwrap());
            }
            // The directory may refuse a value (e.g. NUL); refusing is fine,
            // breaking out or crashing is not.
            Err(DirectoryError::Refused { .. }) => assert!(v.contains('\0'), "{v:?} refused"),
            Err(e) => panic!("{v:?}: {e}"),
        }
    }
    // A wildcard in a value matches itself only, never everyone.
    assert_eq!(d.find_account(BASE, "E*").await.unwrap(), None);
    assert_eq!(
        d.find_account(BASE, "*")
            .await
            .unwrap()
            .map(|dn| dn.to_lowercase()),
        Some(child_dn("uid", "*", PEOPLE).to_lowercase())
    );
    // Bob stays the only member the seed gave the group.
    let members_of_bob = d
        .groups_of(GROUPS, &format!("uid=bob,{PEOPLE}"))
        .await
        .unwrap();
    assert_eq!(members_of_bob, [group]);
}

#[tokio::test]
async fn an_outage_is_reported_as_transient() {
    let Some(mut s) = Slapd::start_with(&people_ldif()) else {
        return;
    };
    let mut d = admin(&s).await;
    s.stop();
    let e = d
        .add_member(
            &format!("cn=finance,{GROUPS}"),
            &format!("uid=ada,{PEOPLE}"),
        )
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    s.start();
    let mut d = admin(&s).await;
    assert!(
        d.add_member(
            &format!("cn=finance,{GROUPS}"),
            &format!("uid=ada,{PEOPLE}")
        )
        .await
        .unwrap()
    );
}
