#!/usr/bin/env python3
"""Generates examples/northwind-roster.csv: a realistic ~300-person
organisation for the idgov tour. Deterministic (fixed seed); run it again to
get the same file.

What is in it: a CEO, department heads, team leads and staff in eleven
departments with a manager chain; contractors and interns; a few people whose
background check is still pending; people starting in the future (start_date
ahead) and contractors whose contracts end in the future (end_date ahead).
"""
import csv
import random

random.seed(27001)

FIRST = """Ada Alan Grace Linus Margaret Ken Barbara Dennis Frances Edsger Radia Tim Hedy Vint
Katherine Donald Shafi Leslie Sophie Niklaus Karen Bjarne Anita John Mary Guido Joan Yukihiro Ingrid
Ole Astrid Sven Kari Nils Liv Erik Sigrid Magnus Ingeborg Håkon Aisha Omar Mei Hiroshi Priya Ravi
Chen Fatima Diego Lucía Mateo Amara Kwame Zanele Tomás Elif Emre Noor Yara Olga Pavel Jana Milan
Sofia Luca Chiara Marco Anna Jonas Lea Felix Emma Noah""".split()
LAST = """Lovelace Turing Hopper Torvalds Hamilton Thompson Liskov Ritchie Allen Dijkstra Perlman
Berners-Lee Lamarr Cerf Johnson Knuth Goldwasser Lamport Wilson Wirth Spärck-Jones Stroustrup Borg
McCarthy Kenyon Rossum Clarke Matsumoto Daubechies Nordmann Hansen Johansen Olsen Larsen Andersen
Pedersen Nilsen Kristiansen Jensen Karlsen Haugen Berg Bakke Moen Dahl Lund Strand Solberg Okafor
Mensah Nakamura Sato Gupta Iyer Wang Li Haddad Ortega Fernández Costa Yılmaz Kaya Novak Horvat
Rossi Bianchi Müller Schmidt Weber Fischer""".split()

DEPARTMENTS = [
    # (name, head title, cost center, size, clearance of staff, team titles)
    ("Executive", "Chief Executive Officer", "CC-100", 4, "restricted", ["Executive Assistant", "Chief of Staff"]),
    ("Finance", "Chief Financial Officer", "CC-200", 30, "confidential", ["Accountant", "Financial Analyst", "Payroll Specialist", "Controller"]),
    ("Engineering", "VP Engineering", "CC-300", 90, "confidential", ["Software Engineer", "Senior Software Engineer", "Site Reliability Engineer", "QA Engineer"]),
    ("Sales", "VP Sales", "CC-400", 45, "internal", ["Account Executive", "Sales Development Rep", "Sales Engineer"]),
    ("Marketing", "VP Marketing", "CC-500", 20, "internal", ["Marketing Manager", "Content Writer", "Designer"]),
    ("People", "Chief People Officer", "CC-600", 14, "confidential", ["HR Business Partner", "Recruiter", "People Operations Specialist"]),
    ("IT", "Head of IT", "CC-700", 18, "confidential", ["IT Support Engineer", "Systems Administrator", "Network Engineer"]),
    ("Security", "Chief Information Security Officer", "CC-800", 10, "restricted", ["Security Analyst", "Security Engineer"]),
    ("Legal", "General Counsel", "CC-900", 8, "confidential", ["Legal Counsel", "Paralegal"]),
    ("Operations", "COO", "CC-110", 25, "internal", ["Operations Coordinator", "Facilities Manager", "Procurement Specialist"]),
    ("Customer Support", "Head of Customer Support", "CC-120", 36, "internal", ["Support Agent", "Support Team Lead"]),
]
LOCATIONS = ["Oslo", "Oslo", "Oslo", "Bergen", "Stockholm", "Remote"]

used = set()


def name():
    while True:
        n = f"{random.choice(FIRST)} {random.choice(LAST)}"
        if n not in used:
            used.add(n)
            return n


def email(n):
    return n.lower().replace(" ", ".").replace("å", "a").replace("ø", "o").replace("æ", "ae") \
        .replace("ü", "u").replace("ı", "i").replace("é", "e").replace("á", "a").replace("í", "i") \
        .replace("ä", "a").replace("ö", "o") + "@northwind.example"


rows = []
next_id = 1000


def person(dept, title, manager, cc, clearance, kind="employee", check="cleared", start=None, end=None, loc=None):
    global next_id
    eid = f"E{next_id}"
    next_id += 1
    n = name()
    rows.append({
        "employee_id": eid,
        "display_name": n,
        "email": email(n),
        "department": dept,
        "title": title,
        "job_code": title.upper().replace(" ", "-")[:24],
        "location": loc or random.choice(LOCATIONS),
        "cost_center": cc,
        "manager_employee_id": manager or "",
        "employment_type": kind,
        "background_check": check,
        "clearance": clearance,
        "start_date": start or f"{random.randint(2015, 2025)}-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}",
        "end_date": end or "",
    })
    return eid


ceo = person("Executive", "Chief Executive Officer", None, "CC-100", "restricted", loc="Oslo")
for dept, head_title, cc, size, clearance, titles in DEPARTMENTS:
    if dept == "Executive":
        head = ceo
    else:
        head = person(dept, head_title, ceo, cc, "restricted" if dept in ("Security", "Finance", "IT") else "confidential", loc="Oslo")
    leads = []
    remaining = size - 1
    for _ in range(max(1, size // 12)):
        leads.append(person(dept, f"{titles[0]} Lead", head, cc, clearance))
        remaining -= 1
    for i in range(remaining):
        mgr = random.choice(leads)
        roll = random.random()
        if roll < 0.07:
            person(dept, random.choice(titles), mgr, cc, "internal", kind="contractor",
                   end=f"2027-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}")
        elif roll < 0.10:
            person(dept, f"{random.choice(titles)} Intern", mgr, cc, "internal", kind="intern",
                   start=f"2026-{random.randint(6, 9):02d}-01", end="2027-06-30")
        else:
            person(dept, random.choice(titles), mgr, cc, clearance)

# A few recent joiners still waiting for their background check.
for r in random.sample([r for r in rows if r["manager_employee_id"] and "Lead" not in r["title"]], 6):
    r["background_check"] = "pending"
    r["start_date"] = "2026-11-02"

# People who start in the future: hired on their start date (pre-hire until then).
for dept, title, start in [("Engineering", "Software Engineer", "2027-06-01"),
                           ("Finance", "Financial Analyst", "2027-06-01"),
                           ("Sales", "Account Executive", "2027-07-01"),
                           ("Security", "Security Analyst", "2027-08-16")]:
    lead = next(r for r in rows if r["department"] == dept and r["title"].endswith("Lead"))
    person(dept, title, lead["employee_id"], lead["cost_center"], "confidential", check="pending", start=start)

with open("examples/northwind-roster.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)

kinds = {}
for r in rows:
    kinds[r["employment_type"]] = kinds.get(r["employment_type"], 0) + 1
print(f"{len(rows)} people; {kinds}; pending checks: {sum(r['background_check'] == 'pending' for r in rows)}")

# ---------------------------------------------------------------------------
# examples/directory/northwind.ldif: Northwind's directory as it was before
# idgov: an account per person working today, group memberships matching the
# birthright rules of northwind-policy.toml (background-check gate included),
# and some drift planted on purpose:
#   - orphan accounts: a service account with no employee number, and an old
#     contractor HR no longer knows (E0999);
#   - an engineer in domain-admins whom nobody granted it (unmanaged);
#   - a legacy VPN group nobody manages, with a few members (unmanaged).
LEVELS = ["public", "internal", "confidential", "restricted"]
TODAY = "2026-11-28"
BASE = "dc=northwind,dc=example"


def ceiling(r):
    if r["background_check"] != "cleared":
        return 0
    c = LEVELS.index(r["clearance"])
    return min(c, 2) if r["employment_type"] == "contractor" else c


working = [r for r in rows if r["start_date"] <= TODAY]
members = {g: [] for g in ["all-staff", "employees", "engineering", "finance", "domain-admins", "vpn-legacy"]}
for r in working:
    c = ceiling(r)
    members["all-staff"].append(r)
    if r["employment_type"] in ("employee", "intern") and c >= 1:
        members["employees"].append(r)
    if r["department"] == "Engineering" and c >= 1:
        members["engineering"].append(r)
    if r["department"] == "Finance" and r["employment_type"] != "contractor" and c >= 2:
        members["finance"].append(r)
engineer = next(r for r in working if r["department"] == "Engineering" and r["title"] == "Software Engineer")
members["domain-admins"].append(engineer)
members["vpn-legacy"].extend([r for r in working if r["department"] == "Sales"][:3])


def uid(r):
    return r["email"].split("@")[0]


out = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: northwind\no: Northwind Analytics\n",
       f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n",
       f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n",
       f"dn: ou=policies,{BASE}\nobjectClass: organizationalUnit\nou: policies\n",
       f"dn: cn=default,ou=policies,{BASE}\nobjectClass: person\nobjectClass: pwdPolicy\ncn: default\nsn: default\n"
       "pwdAttribute: userPassword\npwdLockout: TRUE\n"]
for r in working:
    first, _, last = r["display_name"].partition(" ")
    out.append(f"dn: uid={uid(r)},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {uid(r)}\n"
               f"cn: {r['display_name']}\nsn: {last or first}\ngivenName: {first}\nmail: {r['email']}\n"
               f"employeeNumber: {r['employee_id']}\nuserPassword: northwind\n")
out.append(f"dn: uid=svc-backup,ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: svc-backup\ncn: Backup service\n"
           "sn: service\nuserPassword: northwind\n")
out.append(f"dn: uid=old.contractor,ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: old.contractor\n"
           "cn: Old Contractor\nsn: Contractor\nemployeeNumber: E0999\nuserPassword: northwind\n")
for g, ms in members.items():
    lines = [f"dn: cn={g},ou=groups,{BASE}", "objectClass: groupOfNames", f"cn: {g}", "member: cn=nobody"]
    lines += [f"member: uid={uid(r)},ou=people,{BASE}" for r in ms]
    out.append("\n".join(lines) + "\n")
with open("examples/directory/northwind.ldif", "w", encoding="utf-8") as f:
    f.write("\n".join(out))
print(f"northwind.ldif: {len(working) + 2} accounts; " + ", ".join(f"{g} {len(m)}" for g, m in members.items()))
