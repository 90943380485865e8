//! Directory benchmarks against a private slapd:
//! - leaver latency: terminate RPC acknowledged → the directory confirms the
//!   account locked and in no group, beside the same modifies issued directly;
//! - directory sync of N unchanged accounts, beside a raw paged search.

use crate::{drive, machine, seed};
use idgov_authz::Role;
use idgov_directory::client::Connection;
use idgov_directory::{Directory, Preset};
use idgov_domain::identity::{AttributesPatch, BackgroundCheck};
use idgov_domain::roster::RosterEntry;
use idgov_proto::v1 as pb;
use idgov_proto::v1::hr_service_client::HrServiceClient;
use idgov_server::serve::{ServeConfig, start};
use idgov_server::{App, SystemClock};
use idgov_tests::slapd::{ADMIN_DN, ADMIN_PW, GROUPS, PEOPLE, Slapd};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

pub(crate) const DEPARTMENTS: usize = 10;

pub(crate) fn uid(i: usize) -> String {
    format!("p{i:06}")
}
pub(crate) fn emp(i: usize) -> String {
    format!("P{i:06}")
}

/// Accounts for `people`; `groups` groups, person i in the groups of
/// department i % 10 (groups / 10 each).
fn ldif(people: usize, groups: usize) -> String {
    let mut s = String::with_capacity(people * 200);
    for i in 0..people {
        let _ = write!(
            s,
            "dn: uid={u},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: Person {i}\nsn: {i}\nemployeeNumber: {e}\nuserPassword: pw\n\n",
            u = uid(i),
            e = emp(i)
        );
    }
    let per_dept = groups / DEPARTMENTS;
    for g in 0..groups {
        let dept = g / per_dept.max(1);
        let _ = write!(
            s,
            "dn: cn=g{g:04},{GROUPS}\nobjectClass: groupOfNames\ncn: g{g:04}\nmember: cn=nobody\n"
        );
        for i in (dept..people).step_by(DEPARTMENTS) {
            let _ = writeln!(s, "member: uid={},{PEOPLE}", uid(i));
        }
        s.push('\n');
    }
    s
}

/// A policy: department d's role holds groups d*k .. d*k+k as ldap_group
/// entitlements, given as birthright.
pub(crate) fn policy(groups: usize) -> String {
    let mut s = format!(
        "[[systems]]\nid = \"dir\"\nkind = \"directory\"\nowner = \"{}\"\n\n",
        emp(0)
    );
    for g in 0..groups {
        let _ = write!(
            s,
            "[[entitlements]]\nid = \"g{g:04}\"\nsystem = \"dir\"\nclassification = \"internal\"\nkind = \"ldap_group\"\nldap_group_dn = \"cn=g{g:04},{GROUPS}\"\n\n"
        );
    }
    let per_dept = groups / DEPARTMENTS;
    for d in 0..DEPARTMENTS {
        let ents: Vec<String> = (d * per_dept..(d + 1) * per_dept)
            .map(|g| format!("\"g{g:04}\""))
            .collect();
        let _ = write!(
            s,
            "[[roles]]\nid = \"d{d}\"\nentitlements = [{}]\n\n[[birthright]]\nrole = \"d{d}\"\nwhen = {{ department = \"D{d}\" }}\n\n",
            ents.join(", ")
        );
    }
    s
}

fn roster(people: usize) -> Vec<RosterEntry> {
    (0..people)
        .map(|i| RosterEntry {
            employee_id: emp(i),
            attrs: AttributesPatch {
                display_name: Some(format!("Person {i}")),
                department: Some(format!("D{}", i % DEPARTMENTS)),
                background_check: Some(BackgroundCheck::Cleared),
                ..Default::default()
            },
        })
        .collect()
}

pub(crate) fn connection(s: &Slapd) -> Connection {
    Connection {
        url: s.url(),
        starttls: false,
        bind_dn: ADMIN_DN.into(),
        password: ADMIN_PW.into(),
        timeout: Duration::from_secs(10),
        op_timeout: Duration::from_secs(5),
        keepalive: Duration::from_secs(30),
    }
}

/// Loads identities and the policy into the store at `data_dir`, with no
/// directory attached (the directory is seeded to match already).
async fn seed_store(
    data_dir: &std::path::Path,
    people: usize,
    groups: usize,
) -> anyhow::Result<()> {
    let store = idgov_store::Store::open_data_dir(data_dir).await?;
    let app = App::start(store.clone(), Arc::new(SystemClock), None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (synced, applied) = seed(&app, roster(people), &policy(groups)).await?;
    eprintln!(
        "seeded {people} identities: roster sync {:.1} s, policy apply ({} grants) {:.1} s",
        synced.as_secs_f64(),
        people * (groups / DEPARTMENTS),
        applied.as_secs_f64()
    );
    store.close().await;
    Ok(())
}

/// A private slapd holding `people` accounts in `groups` groups, and an
/// idgov store in `dir`/idgov that matches it. Returns the slapd and the
/// store's data directory.
pub(crate) async fn matching_directory(
    dir: &std::path::Path,
    people: usize,
    groups: usize,
) -> anyhow::Result<(Slapd, std::path::PathBuf)> {
    let t = Instant::now();
    let slapd = Slapd::start_with(&ldif(people, groups))
        .ok_or_else(|| anyhow::anyhow!("slapd unavailable"))?;
    eprintln!(
        "slapd seeded with {people} accounts and {groups} groups in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let data = dir.join("idgov");
    seed_store(&data, people, groups).await?;
    Ok((slapd, data))
}

fn write_config(dir: &std::path::Path, s: &Slapd) -> anyhow::Result<std::path::PathBuf> {
    std::fs::write(dir.join("ldap-password"), ADMIN_PW)?;
    let path = dir.join("directory.toml");
    std::fs::write(
        &path,
        format!(
            "url = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\npassword_file = \"ldap-password\"\naccounts_base = \"{PEOPLE}\"\ngroups_base = \"{GROUPS}\"\npreset = \"openldap\"\nworkers = 8\n",
            s.url()
        ),
    )?;
    Ok(path)
}

pub(crate) fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64, f64) {
    v.sort();
    let at = |p: f64| {
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.95), at(0.99), at(1.0))
}

async fn locked_and_out(d: &mut Directory, i: usize) -> anyhow::Result<bool> {
    let dn = format!("uid={},{PEOPLE}", uid(i));
    Ok(d.is_disabled(&dn).await? && d.groups_of(GROUPS, &dn).await?.is_empty())
}

pub async fn leaver(people: usize, groups: usize, leavers: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        leavers * 2 < people,
        "need at least twice as many people as leavers"
    );
    let dir = tempfile::tempdir()?;
    let (slapd, data) = matching_directory(dir.path(), people, groups).await?;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.clone(),
        directory_file: Some(write_config(dir.path(), &slapd)?),
        scheduler_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let running = start(cfg, Arc::new(SystemClock)).await?;
    let dev =
        idgov_server::auth::dev::DevAuth::load_or_create(&data).map_err(anyhow::Error::msg)?;
    let token: MetadataValue<_> = format!(
        "Bearer {}",
        dev.mint("bench", None, &[Role::HrFeed], chrono::Duration::hours(2))
            .map_err(anyhow::Error::msg)?
    )
    .parse()?;
    let mut hr = HrServiceClient::new(
        Channel::from_shared(format!("http://{}", running.addr))?
            .connect()
            .await?,
    );
    let mut watcher = Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?;
    let grants = groups / DEPARTMENTS;

    // Leavers are spread over the population: every other person from 2.
    let mut idgov = Vec::with_capacity(leavers);
    for k in 0..leavers {
        let i = 2 + 2 * k * (people / (2 * leavers + 2));
        let mut req = tonic::Request::new(pb::SubmitHrEventRequest {
            event: Some(pb::HrEvent {
                source: "bench".into(),
                event_id: format!("leave-{i}"),
                r#type: pb::HrEventType::Terminate as i32,
                employee_id: emp(i),
                ..Default::default()
            }),
        });
        req.metadata_mut().insert("authorization", token.clone());
        hr.submit_hr_event(req).await?;
        let acked = Instant::now();
        while !locked_and_out(&mut watcher, i).await? {
            anyhow::ensure!(
                acked.elapsed() < Duration::from_secs(30),
                "leaver {i} not out after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        idgov.push(acked.elapsed());
    }
    // Raw: the same modifies issued directly for other people: lock the
    // account, then remove it from each of its groups.
    let mut raw = Vec::with_capacity(leavers);
    let mut direct = Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?;
    for k in 0..leavers {
        let i = 3 + 2 * k * (people / (2 * leavers + 2));
        let dn = format!("uid={},{PEOPLE}", uid(i));
        let dept = i % DEPARTMENTS;
        let start = Instant::now();
        direct.disable(&dn).await?;
        for g in dept * grants..(dept + 1) * grants {
            direct
                .remove_member(&format!("cn=g{g:04},{GROUPS}"), &dn)
                .await?;
        }
        raw.push(start.elapsed());
    }
    running.stop().await?;
    let (a50, a95, a99, amax) = percentiles(idgov);
    let (r50, r95, r99, rmax) = percentiles(raw);
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- leaver --people {people} --groups {groups} --leavers {leavers}\n"
    );
    println!(
        "| {people} identities, {} grants, {groups} groups; {leavers} leavers | p50 | p95 | p99 | max |",
        people * grants
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| idgov: terminate acknowledged → account locked and in no group | {a50:.1} ms | {a95:.1} ms | {a99:.1} ms | {amax:.1} ms |"
    );
    println!(
        "| raw: the same LDAP modifies issued directly (lock + {grants} member removals) | {r50:.1} ms | {r95:.1} ms | {r99:.1} ms | {rmax:.1} ms |"
    );
    Ok(())
}

/// Watches leavers `ids` (each acknowledged at `acked[k]`) until every one
/// is locked and in no group, with `conns` watcher connections. Returns,
/// per leaver, the time to locked and the time to stripped. Locks are
/// watched first with one cheap read each; groups (a search over every
/// group) after, less often, so the watchers do not take slapd's time.
async fn watch(
    slapd: &Slapd,
    ids: &[usize],
    acked: &[Instant],
    conns: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    use futures::StreamExt;
    let deadline = Duration::from_secs(300);
    let chunks: Vec<Vec<(usize, Instant)>> = ids
        .iter()
        .copied()
        .zip(acked.iter().copied())
        .collect::<Vec<_>>()
        .chunks(ids.len().div_ceil(conns).max(1))
        .map(|c| c.to_vec())
        .collect();
    let results = futures::stream::iter(chunks)
        .map(|chunk| async move {
            let mut d = Directory::connect(&connection(slapd), Preset::Openldap.schema()).await?;
            let mut locked: Vec<Option<Duration>> = vec![None; chunk.len()];
            let mut stripped: Vec<Option<Duration>> = vec![None; chunk.len()];
            while locked.iter().any(Option::is_none) {
                for (k, (i, at)) in chunk.iter().enumerate() {
                    if locked[k].is_none()
                        && d.is_disabled(&format!("uid={},{PEOPLE}", uid(*i))).await?
                    {
                        locked[k] = Some(at.elapsed());
                    }
                }
                anyhow::ensure!(
                    chunk[0].1.elapsed() < deadline,
                    "not locked after {deadline:?}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            while stripped.iter().any(Option::is_none) {
                for (k, (i, at)) in chunk.iter().enumerate() {
                    if stripped[k].is_none()
                        && d.groups_of(GROUPS, &format!("uid={},{PEOPLE}", uid(*i)))
                            .await?
                            .is_empty()
                    {
                        stripped[k] = Some(at.elapsed());
                    }
                }
                anyhow::ensure!(
                    chunk[0].1.elapsed() < deadline,
                    "not stripped after {deadline:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok::<_, anyhow::Error>((
                locked.into_iter().flatten().collect::<Vec<_>>(),
                stripped.into_iter().flatten().collect::<Vec<_>>(),
            ))
        })
        .buffer_unordered(conns)
        .collect::<Vec<_>>()
        .await;
    let (mut l, mut s) = (Vec::new(), Vec::new());
    for r in results {
        let (a, b) = r?;
        l.extend(a);
        s.extend(b);
    }
    Ok((l, s))
}

/// A burst of `burst` terminations sent at once: time to locked and to
/// stripped per leaver, beside the same modifies issued directly with the
/// same concurrency.
pub async fn leaver_burst(people: usize, groups: usize, burst: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    anyhow::ensure!(
        burst * 2 < people,
        "need at least twice as many people as leavers"
    );
    let dir = tempfile::tempdir()?;
    let (slapd, data) = matching_directory(dir.path(), people, groups).await?;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.clone(),
        directory_file: Some(write_config(dir.path(), &slapd)?),
        scheduler_interval: Duration::from_secs(3600),
        ..ServeConfig::default()
    };
    let running = start(cfg, Arc::new(SystemClock)).await?;
    let dev =
        idgov_server::auth::dev::DevAuth::load_or_create(&data).map_err(anyhow::Error::msg)?;
    let token: MetadataValue<_> = format!(
        "Bearer {}",
        dev.mint("bench", None, &[Role::HrFeed], chrono::Duration::hours(2))
            .map_err(anyhow::Error::msg)?
    )
    .parse()?;
    let channel = Channel::from_shared(format!("http://{}", running.addr))?
        .connect()
        .await?;
    // As in service: the daily directory sync has been read.
    let synced = Instant::now();
    running
        .app
        .sync_directory(true, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "directory sync (dry run) read in {:.1} s",
        synced.elapsed().as_secs_f64()
    );
    let grants = groups / DEPARTMENTS;
    let ids: Vec<usize> = (0..burst).map(|k| 2 + 2 * k).collect();
    // All at once: each termination is its own call, sent concurrently.
    let acks = futures::stream::iter(ids.clone())
        .map(|i| {
            let mut hr = HrServiceClient::new(channel.clone());
            let token = token.clone();
            async move {
                let mut req = tonic::Request::new(pb::SubmitHrEventRequest {
                    event: Some(pb::HrEvent {
                        source: "bench".into(),
                        event_id: format!("burst-{i}"),
                        r#type: pb::HrEventType::Terminate as i32,
                        employee_id: emp(i),
                        ..Default::default()
                    }),
                });
                req.metadata_mut().insert("authorization", token);
                hr.submit_hr_event(req).await.map(|_| Instant::now())
            }
        })
        .buffered(burst)
        .collect::<Vec<_>>()
        .await;
    let acked: Vec<Instant> = acks.into_iter().collect::<Result<_, _>>()?;
    let (locked, stripped) = match watch(&slapd, &ids, &acked, 8).await {
        Ok(x) => x,
        Err(e) => {
            for state in [
                idgov_store::DirOpState::Pending,
                idgov_store::DirOpState::Failed,
            ] {
                let ops = running
                    .app
                    .store
                    .list_directory_ops(Some(state), "", 0, 20)
                    .await?;
                for o in ops {
                    eprintln!(
                        "{state} op {} {} {} attempts {} error {:?}",
                        o.id, o.employee_id, o.kind, o.attempts, o.last_error
                    );
                }
            }
            return Err(e);
        }
    };
    running.stop().await?;

    // Raw: the same modifies for other people, issued directly the same
    // way (locks first, 32 at a time; then the strips, 8 at a time), on
    // connections opened beforehand.
    let raw_ids: Vec<usize> = (0..burst).map(|k| 3 + 2 * k).collect();
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?);
    }
    let start_raw = Instant::now();
    let lock_chunks: Vec<(Directory, Vec<usize>)> = conns
        .into_iter()
        .zip(
            raw_ids
                .chunks(burst.div_ceil(32).max(1))
                .map(|c| c.to_vec()),
        )
        .collect();
    let locked_raw = futures::stream::iter(lock_chunks)
        .map(|(mut d, chunk)| async move {
            let mut t = Vec::new();
            for i in &chunk {
                d.disable(&format!("uid={},{PEOPLE}", uid(*i))).await?;
                t.push(start_raw.elapsed());
            }
            Ok::<_, anyhow::Error>((d, t))
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut raw_locked = Vec::new();
    let mut conns = Vec::new();
    for r in locked_raw {
        let (d, t) = r?;
        raw_locked.extend(t);
        conns.push(d);
    }
    conns.truncate(8);
    let strip_chunks: Vec<(Directory, Vec<usize>)> = conns
        .into_iter()
        .zip(raw_ids.chunks(burst.div_ceil(8).max(1)).map(|c| c.to_vec()))
        .collect();
    let stripped_raw = futures::stream::iter(strip_chunks)
        .map(|(mut d, chunk)| async move {
            let mut t = Vec::new();
            for i in &chunk {
                let dn = format!("uid={},{PEOPLE}", uid(*i));
                let dept = i % DEPARTMENTS;
                for g in dept * grants..(dept + 1) * grants {
                    d.remove_member(&format!("cn=g{g:04},{GROUPS}"), &dn)
                        .await?;
                }
                t.push(start_raw.elapsed());
            }
            Ok::<_, anyhow::Error>(t)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    let mut raw_stripped = Vec::new();
    for r in stripped_raw {
        raw_stripped.extend(r?);
    }
    let row = |name: &str, v: Vec<Duration>| {
        let (p50, p95, p99, max) = percentiles(v);
        println!("| {name} | {p50:.0} ms | {p95:.0} ms | {p99:.0} ms | {max:.0} ms |");
    };
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- leaver --people {people} --groups {groups} --burst {burst}\n"
    );
    println!(
        "| {people} identities, {} grants, {groups} groups; {burst} terminations sent at once | p50 | p95 | p99 | max |",
        people * grants
    );
    println!("|---|---:|---:|---:|---:|");
    row("idgov: acknowledged → account locked", locked);
    row("idgov: acknowledged → in no group", stripped);
    row(
        "raw: the same lock modifies, 32 at a time, from the start → locked",
        raw_locked,
    );
    row(
        "raw: then the member removals, 8 at a time → out of its groups",
        raw_stripped,
    );
    Ok(())
}

pub async fn dirsync(people: usize, groups: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (slapd, data) = matching_directory(dir.path(), people, groups).await?;
    // Raw: the same paged reads, nothing else.
    let mut d = Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?;
    let t = Instant::now();
    let mut accounts = 0;
    let mut reader = d.read_accounts(PEOPLE, 500).await?;
    loop {
        let batch = reader.next_batch(1000).await?;
        if batch.is_empty() {
            break;
        }
        accounts += batch.len();
    }
    let mut group_count = 0;
    let mut reader = d.read_groups(GROUPS, 500).await?;
    while reader.next().await?.is_some() {
        group_count += 1;
    }
    let raw = t.elapsed();
    // idgov: a full sync (read, correlate, compute drift, record the run).
    let store = idgov_store::Store::open_data_dir(&data).await?;
    let cfg = idgov_directory::DirectoryConfig::load(&write_config(dir.path(), &slapd)?)
        .map_err(anyhow::Error::msg)?;
    let app = App::start(store, Arc::new(SystemClock), Some(cfg))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rss_before = crate::scale::rss().0;
    crate::scale::reset_peak();
    let t = Instant::now();
    let (run, drift) = app
        .sync_directory(false, "service:bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let synced = t.elapsed();
    let (rss_after, rss_peak) = crate::scale::rss();
    anyhow::ensure!(
        drift.is_empty(),
        "expected no drift, found {}: {:?}",
        drift.len(),
        drift.first()
    );
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- dirsync --people {people} --groups {groups}\n"
    );
    println!(
        "| directory with {accounts} accounts, {group_count} groups, {} memberships; no change | seconds |",
        people * (groups / DEPARTMENTS)
    );
    println!("|---|---:|");
    println!(
        "| idgov: directory sync (read, correlate, drift, record) — {} accounts | {:.2} |",
        run.accounts,
        synced.as_secs_f64()
    );
    println!(
        "| raw: paged search of the same accounts and groups | {:.2} |",
        raw.as_secs_f64()
    );
    println!(
        "\nRSS of the process during the sync (idgov and the bench's client): {rss_before:.0} → peak {rss_peak:.0} → {rss_after:.0} MiB"
    );
    Ok(())
}

/// Backlog drain: operations queued while the directory is down are applied
/// when it returns; beside the same modifies issued directly with the same
/// concurrency.
pub async fn drain(people: usize, workers: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Accounts, and one empty group per department.
    let mut seed_ldif = ldif(people, 0);
    for d in 0..DEPARTMENTS {
        let _ = write!(
            seed_ldif,
            "dn: cn=g{d:04},{GROUPS}\nobjectClass: groupOfNames\ncn: g{d:04}\nmember: cn=nobody\n\n"
        );
    }
    let mut slapd =
        Slapd::start_with(&seed_ldif).ok_or_else(|| anyhow::anyhow!("slapd unavailable"))?;
    let data = dir.path().join("idgov");
    let half = people / 2;
    let store = idgov_store::Store::open_data_dir(&data).await?;
    let mut cfg = idgov_directory::DirectoryConfig::load(&write_config(dir.path(), &slapd)?)
        .map_err(anyhow::Error::msg)?;
    cfg.workers = workers;
    let app = App::start(store.clone(), Arc::new(SystemClock), Some(cfg))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The directory goes down; the first half of the people join and get
    // their department's group through the outbox.
    slapd.stop();
    let mut entries = roster(half);
    for e in &mut entries {
        e.attrs.department = Some(format!(
            "D{}",
            e.employee_id[1..].parse::<usize>().unwrap_or(0) % DEPARTMENTS
        ));
    }
    seed(&app, entries, &policy(DEPARTMENTS)).await?;
    let queued = app
        .store
        .list_directory_ops(Some(idgov_store::DirOpState::Pending), "", 0, i64::MAX)
        .await?
        .len();
    // Let every head operation fail once against the dead directory.
    tokio::time::sleep(Duration::from_millis(700)).await;
    slapd.start();
    let t = Instant::now();
    loop {
        let left = app
            .store
            .list_directory_ops(Some(idgov_store::DirOpState::Pending), "", 0, 1)
            .await?
            .len();
        if left == 0 {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "backlog not drained in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = t.elapsed();
    // Raw: the same add-member modifies for the other half, directly.
    let base = Directory::connect(&connection(&slapd), Preset::Openldap.schema()).await?;
    let raw_ops = people - half;
    let raw = drive(raw_ops as u64, workers as u64, move |k| {
        let mut d = base.clone();
        let i = half + k as usize;
        async move {
            let dn = format!("uid={},{PEOPLE}", uid(i));
            d.add_member(&format!("cn=g{:04},{GROUPS}", i % DEPARTMENTS), &dn)
                .await?;
            Ok(())
        }
    })
    .await?;
    let raw_ops = people - half;
    println!("\nmachine: {}", machine());
    println!(
        "command: cargo run --release -p idgov-bench -- drain --people {people} --workers {workers}\n"
    );
    println!("| backlog after an outage, {workers} workers | operations | seconds | per second |");
    println!("|---|---:|---:|---:|");
    println!(
        "| idgov: queued add-member operations drained after the directory returns (includes ≤ 1 s of backoff) | {queued} | {:.2} | {:.0} |",
        drained.as_secs_f64(),
        queued as f64 / drained.as_secs_f64()
    );
    println!(
        "| raw: the same add-member modifies issued directly | {raw_ops} | {raw:.2} | {:.0} |",
        raw_ops as f64 / raw
    );
    Ok(())
}
