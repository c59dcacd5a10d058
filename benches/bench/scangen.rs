//! A deterministic synthetic scan generator (scan format version 1).
//!
//! A seeded SplitMix64 drives every choice, so the same size and seed always
//! give the same bytes. The mix follows a mid-sized enterprise tenant: ~85%
//! members, ~10% guests (`#EXT#` UPNs), ~5% service accounts; ~1% of members
//! hold Global Administrator (active, eligible through PIM, or both) and ~2.5%
//! other admin roles; a few guests hold roles; groups include dynamic,
//! on-premises synced and the privileged groups the shipped rules know; sign-ins
//! are recent, stale (90+ days) or missing; risk scores, MFA registration and
//! free-form attributes are set as an ITDR exporter would.
//!
//! Findings use the shipped rules' finding ids (`policies/*.rhai`, `findings:`)
//! so that every shipped rule proposes actions, plus two findings no rule reads.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

/// The tenant every generated scan belongs to.
pub const TENANT_ID: &str = "5b1c0e2a-7d3f-4e8a-9c21-6f4b3a2d1e0f";
/// When every generated scan was taken.
pub const SCANNED_AT: &str = "2026-11-20T06:00:00Z";
/// The seed used unless told otherwise.
pub const SEED: u64 = 0x5eed_2026_1120;
/// Break-glass accounts (always identities 0 and 1); the bench configs protect them.
pub const BREAK_GLASS: [&str; 2] = [
    "breakglass01@contoso.onmicrosoft.com",
    "breakglass02@contoso.onmicrosoft.com",
];

const GA: &str = "62e90394-69f5-4237-9190-012177145e10";
/// (template id, name) of other admin roles; the first three are in the
/// standing-privileged-role-removal rule's privileged list.
const OTHER_ROLES: &[(&str, &str)] = &[
    (
        "e8611ab8-c189-46e8-94e1-60213ab1f814",
        "Privileged Role Administrator",
    ),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
    (
        "194ae4cb-b126-40b2-bd5b-6091b380977d",
        "Security Administrator",
    ),
    (
        "729827e3-9c14-49f7-bb1b-9608f156bbb8",
        "Helpdesk Administrator",
    ),
    (
        "29232cdf-9323-42fd-ade2-1d097af3e4de",
        "Exchange Administrator",
    ),
    (
        "f28a1f50-f6e7-4571-818b-6a12f2af6b6c",
        "SharePoint Administrator",
    ),
    (
        "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3",
        "Application Administrator",
    ),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", "Security Reader"),
    ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader"),
    (
        "3a2c62db-5318-420d-8d74-23affee5d9d5",
        "Intune Administrator",
    ),
];
const GUEST_ROLES: &[(&str, &str)] = &[
    ("95e79109-95c0-4d8e-aee3-d01accf2d47b", "Guest Inviter"),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", "Security Reader"),
    ("fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"),
];
/// The privileged groups named in stale-privileged-group-removal.rhai.
const PRIV_GROUPS: &[(&str, &str, bool, bool)] = &[
    (
        "a11b34ce-21be-493e-bf43-8661e5a160df",
        "Tier0 Admins",
        false,
        false,
    ),
    (
        "1d921645-8e77-4c7d-ad6c-bf348f3b42fa",
        "Finance Admins Temp",
        false,
        false,
    ),
    (
        "8827d37e-b379-4ba7-bed0-6fa8cc8f9a39",
        "SG-Helpdesk-Operators",
        false,
        true,
    ),
];
const BREAK_GLASS_GROUP: &str = "0b5e4a11-ca5e-4b1a-9e55-b2ea6c0ffee0";
const ALL_EMPLOYEES: &str = "d1a2b3c4-0000-4e11-8a11-a11e5a5a5a5a";

const FIRST: &[&str] = &[
    "adele", "alex", "allan", "amir", "ana", "ben", "carla", "chen", "christie", "daniel", "diego",
    "elena", "emma", "farid", "grace", "hana", "henrik", "irvin", "isaiah", "jan", "joni", "kenji",
    "lara", "lee", "lidia", "lynne", "maria", "megan", "miriam", "nestor", "olga", "patti",
    "pradeep", "priya", "raul", "sofia", "tomas", "wei", "yusuf", "zoe",
];
const LAST: &[&str] = &[
    "adams", "bauer", "bowen", "cline", "costa", "dubois", "eriksen", "fischer", "garcia",
    "gonzalez", "hansen", "ito", "jensen", "kowalski", "larsen", "lopez", "martin", "meyer",
    "moreau", "muller", "nakamura", "novak", "olsen", "patel", "petrov", "quinn", "rossi", "sato",
    "schmidt", "silva", "smith", "sousa", "tanaka", "varga", "vance", "wagner", "weber", "wilber",
    "young", "zhang",
];
const PARTNERS: &[&str] = &[
    "fabrikam.com",
    "northwindtraders.com",
    "adventure-works.com",
    "tailspintoys.com",
    "wingtiptoys.com",
    "litwareinc.com",
    "woodgrovebank.com",
    "gmail.com",
];
const APPS: &[&str] = &[
    "backup",
    "scanner",
    "erp-sync",
    "hr-feed",
    "print",
    "sftp",
    "crm",
    "monitoring",
    "build",
    "mailer",
];
const DEPARTMENTS: &[&str] = &[
    "Finance",
    "Sales",
    "Engineering",
    "HR",
    "Legal",
    "Marketing",
    "Operations",
    "IT",
    "Support",
    "Research",
];
const EXPOSURES: &[&str] = &[
    "legacy-auth",
    "password-spray-target",
    "leaked-credential",
    "impossible-travel",
    "mfa-fatigue",
    "token-replay",
    "weak-password",
];
const METHODS: &[&str] = &[
    "password",
    "microsoftAuthenticator",
    "sms",
    "fido2",
    "windowsHelloForBusiness",
    "softwareOath",
];

/// SplitMix64: tiny, fast, and good enough for synthetic data.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// One element of a slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }

    /// A random version-4 GUID whose last 12 digits are `tag` (so ids stay unique).
    pub fn guid(&mut self, tag: u64) -> String {
        let a = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            a & 0xfff,
            8 + (self.below(4)),
            self.below(0x1000),
            tag & 0xffff_ffff_ffff
        )
    }

    /// An opaque assignment id like Entra's (base64url-ish, 46 characters).
    pub fn assignment_id(&mut self) -> String {
        const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        (0..46)
            .map(|_| ALPHA[self.below(64) as usize] as char)
            .collect()
    }
}

/// A group of the synthetic tenant.
#[derive(Clone)]
struct Group {
    id: String,
    name: String,
    dynamic: bool,
    synced: bool,
}

impl Group {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "display_name": self.name,
            "dynamic": self.dynamic,
            "on_premises_synced": self.synced,
        })
    }
}

/// What a generated scan contains.
#[derive(Debug, Default, Clone)]
pub struct GenStats {
    /// Identities.
    pub identities: usize,
    /// Members (not service accounts).
    pub members: usize,
    /// Guests.
    pub guests: usize,
    /// Service accounts (members named svc-*).
    pub service: usize,
    /// Identities with an active Global Administrator assignment.
    pub ga_active: usize,
    /// Identities with an eligible Global Administrator assignment.
    pub ga_eligible: usize,
    /// Identities with other admin roles.
    pub other_admins: usize,
    /// Guests with a role.
    pub guest_roles: usize,
    /// Disabled accounts.
    pub disabled: usize,
    /// Last sign-in 90+ days before the scan.
    pub stale: usize,
    /// Never signed in.
    pub never: usize,
    /// `mfa_registered: false`.
    pub no_mfa: usize,
    /// Risk score 70 or more.
    pub high_risk: usize,
    /// Group memberships in all.
    pub memberships: usize,
    /// (finding id, affected identities).
    pub findings: Vec<(String, usize)>,
    /// Size of the JSON document.
    pub bytes: usize,
}

struct Person {
    id: String,
    stale_or_never: bool,
    days: Option<i64>,
    guest: bool,
    mfa: Option<bool>,
    risk: Option<i64>,
    ga_any: bool,
    standing_priv: bool,
    any_role: bool,
    in_priv_group: bool,
    legacy: bool,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Generates a scan of `n` identities (n >= 2). The document is compact JSON
/// with one identity per line, as an exporter streaming its output writes it.
pub fn generate(n: usize, seed: u64) -> (Vec<u8>, GenStats) {
    assert!(n >= 2, "at least the two break-glass accounts");
    let mut rng = Rng::new(seed);
    let scanned: DateTime<Utc> = SCANNED_AT.parse().expect("scanned_at");
    let mut st = GenStats {
        identities: n,
        ..GenStats::default()
    };

    // The group pool: privileged groups, break-glass, all-employees, then
    // department, project and distribution-like groups (20% dynamic, 30% synced).
    let mut pool: Vec<Group> = PRIV_GROUPS
        .iter()
        .map(|(id, name, dynamic, synced)| Group {
            id: id.to_string(),
            name: name.to_string(),
            dynamic: *dynamic,
            synced: *synced,
        })
        .collect();
    let break_glass = Group {
        id: BREAK_GLASS_GROUP.into(),
        name: "Break Glass Accounts".into(),
        dynamic: false,
        synced: false,
    };
    let all_employees = Group {
        id: ALL_EMPLOYEES.into(),
        name: "All Employees".into(),
        dynamic: true,
        synced: false,
    };
    let n_groups = (40 + n / 250).min(600);
    let mut common = Vec::with_capacity(n_groups);
    for g in 0..n_groups {
        let dynamic = rng.chance(0.2);
        let synced = !dynamic && rng.chance(0.3);
        let prefix = if synced { "SG-" } else { "" };
        let name = match g % 4 {
            0 => format!("{prefix}{} Team {g}", rng.pick(DEPARTMENTS)),
            1 => format!("{prefix}Project {g} Members"),
            2 => format!("{prefix}{} Site {g} Owners", rng.pick(DEPARTMENTS)),
            _ => format!("{prefix}App Access {g}"),
        };
        common.push(Group {
            id: rng.guid(0x9_0000_0000 + g as u64),
            name,
            dynamic,
            synced,
        });
    }
    pool.extend(common.iter().cloned());

    let mut out: Vec<u8> = Vec::with_capacity(n * 1300 + 4096);
    out.extend_from_slice(
        format!(
            "{{\"schema_version\":1,\"tenant_id\":\"{TENANT_ID}\",\"tenant_name\":\"contoso.onmicrosoft.com\",\"scanned_at\":\"{SCANNED_AT}\",\n\"identities\":[\n"
        )
        .as_bytes(),
    );
    let mut people = Vec::with_capacity(n);
    for i in 0..n {
        let id = rng.guid(i as u64 + 1);
        let bg = i < 2;
        let roll = rng.f64();
        let (kind, guest) = if bg {
            ("breakglass", false)
        } else if roll < 0.85 {
            ("member", false)
        } else if roll < 0.95 {
            ("guest", true)
        } else {
            ("service", false)
        };
        let first = *rng.pick(FIRST);
        let last = *rng.pick(LAST);
        let (upn, display) = match kind {
            "breakglass" => (
                format!("breakglass{:02}@contoso.onmicrosoft.com", i + 1),
                format!("Break Glass {:02}", i + 1),
            ),
            "guest" => {
                let partner = *rng.pick(PARTNERS);
                (
                    format!("{first}.{last}{i}_{partner}#EXT#@contoso.onmicrosoft.com"),
                    format!("{} {} ({partner})", cap(first), cap(last)),
                )
            }
            "service" => {
                let app = *rng.pick(APPS);
                (
                    format!("svc-{app}-{i}@contoso.onmicrosoft.com"),
                    format!("Service account {app} {i}"),
                )
            }
            _ => (
                format!("{first}.{last}{i}@contoso.com"),
                format!("{} {}", cap(first), cap(last)),
            ),
        };
        match kind {
            "guest" => st.guests += 1,
            "service" => st.service += 1,
            _ => st.members += 1,
        }
        let enabled = bg
            || rng.chance(match kind {
                "guest" => 0.90,
                "service" => 0.97,
                _ => 0.93,
            });
        if !enabled {
            st.disabled += 1;
        }
        // Days since the last sign-in, None for never.
        let r = rng.f64();
        let days: Option<i64> = if bg {
            None
        } else {
            let (recent, mid, stale) = match kind {
                "guest" => (0.40, 0.60, 0.85),
                "service" => (0.60, 0.80, 0.90),
                _ => (0.72, 0.85, 0.95),
            };
            if r < recent {
                Some(rng.range(0, 29))
            } else if r < mid {
                Some(rng.range(30, 89))
            } else if r < stale {
                Some(rng.range(90, 700))
            } else {
                None
            }
        };
        let stale_or_never = days.is_none_or(|d| d >= 90);
        match days {
            None => st.never += 1,
            Some(d) if d >= 90 => st.stale += 1,
            _ => {}
        }
        let last_sign_in = days.map(|d| {
            rfc3339(scanned - Duration::days(d) - Duration::seconds(rng.range(0, 86_399)))
        });
        let risk = if bg || rng.chance(0.15) {
            None
        } else {
            let r = rng.f64();
            Some(if r < 0.80 {
                rng.range(0, 29)
            } else if r < 0.95 {
                rng.range(30, 69)
            } else {
                rng.range(70, 100)
            })
        };
        if risk.is_some_and(|r| r >= 70) {
            st.high_risk += 1;
        }
        let mfa_roll = rng.f64();
        let mfa = if bg {
            Some(true)
        } else {
            let (yes, no) = match kind {
                "guest" => (0.40, 0.70),
                "service" => (0.10, 0.85),
                _ => (0.78, 0.92),
            };
            if mfa_roll < yes {
                Some(true)
            } else if mfa_roll < no {
                Some(false)
            } else {
                None
            }
        };
        if mfa == Some(false) {
            st.no_mfa += 1;
        }

        // Roles.
        let mut roles = Vec::new();
        let mut ga_any = false;
        let mut standing_priv = false;
        let add_role = |rng: &mut Rng, roles: &mut Vec<Value>, tid: &str, name: &str, t: &str| {
            let scope = if tid != GA && rng.chance(0.1) {
                let unit = rng.below(50);
                format!("/administrativeUnits/{}", rng.guid(0xA_0000_0000 + unit))
            } else {
                "/".to_string()
            };
            roles.push(json!({
                "assignment_id": rng.assignment_id(),
                "role_definition_id": tid,
                "role_name": name,
                "directory_scope_id": scope,
                "assignment_type": t,
            }));
        };
        let role_roll = rng.f64();
        if bg {
            add_role(&mut rng, &mut roles, GA, "Global Administrator", "active");
            ga_any = true;
            st.ga_active += 1;
        } else if kind == "member" && role_roll < 0.012 {
            ga_any = true;
            let t = rng.f64();
            let (active, eligible) = if t < 0.5 {
                (true, false)
            } else if t < 0.8 {
                (false, true)
            } else {
                (true, true)
            };
            if active {
                add_role(&mut rng, &mut roles, GA, "Global Administrator", "active");
                st.ga_active += 1;
                standing_priv = true;
            }
            if eligible {
                add_role(&mut rng, &mut roles, GA, "Global Administrator", "eligible");
                st.ga_eligible += 1;
            }
        } else if (kind == "member" && role_roll < 0.037) || (kind == "service" && role_roll < 0.02)
        {
            st.other_admins += 1;
            let count = 1 + rng.below(2) as usize;
            for _ in 0..count {
                let idx = rng.below(OTHER_ROLES.len() as u64) as usize;
                let (tid, name) = OTHER_ROLES[idx];
                let t = rng.f64();
                if t < 0.85 {
                    add_role(&mut rng, &mut roles, tid, name, "active");
                    standing_priv |= idx < 3;
                }
                if t >= 0.6 {
                    add_role(&mut rng, &mut roles, tid, name, "eligible");
                }
            }
        } else if guest && role_roll < 0.005 {
            let (tid, name) = *rng.pick(GUEST_ROLES);
            add_role(&mut rng, &mut roles, tid, name, "active");
            st.guest_roles += 1;
        }
        let any_role = !roles.is_empty();

        // Groups.
        let mut groups: Vec<&Group> = Vec::new();
        if bg {
            groups.push(&break_glass);
            groups.push(&pool[0]);
        } else {
            if kind == "member" && rng.chance(0.95) {
                groups.push(&all_employees);
            }
            if any_role && !guest && rng.chance(0.4) {
                groups.push(&pool[0]);
            }
            if rng.chance(0.008) {
                groups.push(&pool[1]);
            }
            if rng.chance(0.008) {
                groups.push(&pool[2]);
            }
            let k = match kind {
                "guest" => rng.below(3),
                "service" => rng.below(2),
                _ => 1 + rng.below(7),
            };
            for _ in 0..k {
                let g = rng.pick(&common);
                if !groups.iter().any(|x| x.id == g.id) {
                    groups.push(g);
                }
            }
        }
        st.memberships += groups.len();
        let in_priv_group = groups
            .iter()
            .any(|g| PRIV_GROUPS.iter().any(|p| p.0 == g.id));

        let legacy = rng.chance(0.03);
        let mut ident = json!({
            "id": id,
            "user_principal_name": upn,
            "display_name": display,
            "user_type": if guest { "Guest" } else { "Member" },
            "account_enabled": enabled,
            "last_sign_in": last_sign_in,
            "roles": roles,
            "groups": groups.iter().map(|g| g.json()).collect::<Vec<_>>(),
        });
        if let Some(r) = risk {
            ident["risk_score"] = json!(r);
        }
        if let Some(m) = mfa {
            ident["mfa_registered"] = json!(m);
        }
        if bg || rng.chance(0.9) {
            let mut exposures: Vec<&str> = Vec::new();
            if legacy {
                exposures.push("legacy-auth");
            }
            for _ in 0..rng.below(3) {
                let e = *rng.pick(EXPOSURES);
                if !exposures.contains(&e) {
                    exposures.push(e);
                }
            }
            let mut methods: Vec<&str> = vec!["password"];
            if mfa == Some(true) {
                for _ in 0..1 + rng.below(2) {
                    let m = *rng.pick(&METHODS[1..]);
                    if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
            }
            ident["attributes"] = json!({
                "source": "zscaler-itdr",
                "department": rng.pick(DEPARTMENTS),
                "country": rng.pick(&["DE", "FR", "US", "GB", "NL", "PL", "IN", "JP"]),
                "exposures": exposures,
                "auth_methods": methods,
                "devices": rng.below(5),
                "password_last_changed": rfc3339(scanned - Duration::days(rng.range(1, 900))),
                "itdr": { "score_version": "2026.3", "signals": rng.below(12) },
            });
        }
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut out, &ident).expect("write identity");
        people.push(Person {
            id,
            stale_or_never,
            days,
            guest,
            mfa,
            risk,
            ga_any,
            standing_priv,
            any_role,
            in_priv_group,
            legacy,
        });
    }
    out.extend_from_slice(b"\n],\n\"findings\":[\n");

    let ids = |f: &dyn Fn(&Person) -> bool| -> Vec<&str> {
        people
            .iter()
            .filter(|p| f(p))
            .map(|p| p.id.as_str())
            .collect()
    };
    let findings: Vec<(&str, &str, &str, &str, Vec<&str>)> = vec![
        (
            "ZS-MFA-001",
            "Accounts without a registered MFA method",
            "high",
            "authentication",
            ids(&|p| p.mfa == Some(false)),
        ),
        (
            "ZS-PRIV-002",
            "Global Administrators without phishing-resistant MFA",
            "critical",
            "privileged-access",
            ids(&|p| p.ga_any),
        ),
        (
            "ZS-STALE-003",
            "Stale accounts (no sign-in for 90 days or never)",
            "medium",
            "hygiene",
            ids(&|p| p.stale_or_never),
        ),
        (
            "ZS-GUEST-004",
            "Guest accounts holding directory roles",
            "high",
            "external-access",
            ids(&|p| p.guest && p.any_role),
        ),
        (
            "ZS-RISK-005",
            "High-risk users with active sessions",
            "high",
            "threat",
            ids(&|p| p.risk.is_some_and(|r| r >= 70)),
        ),
        (
            "ZS-PRIV-006",
            "Standing privileged role assignments",
            "high",
            "privileged-access",
            ids(&|p| p.standing_priv),
        ),
        (
            "ZS-GRP-007",
            "Stale members of privileged groups",
            "medium",
            "privileged-access",
            ids(&|p| p.in_priv_group && p.days.is_none_or(|d| d >= 90)),
        ),
        (
            "ZS-LEGACY-008",
            "Legacy authentication protocols in use",
            "low",
            "authentication",
            ids(&|p| p.legacy),
        ),
        (
            "ZS-TENANT-009",
            "Security defaults disabled without Conditional Access baseline",
            "info",
            "tenant",
            Vec::new(),
        ),
    ];
    for (k, (fid, title, sev, cat, affected)) in findings.iter().enumerate() {
        if k > 0 {
            out.extend_from_slice(b",\n");
        }
        st.findings.push((fid.to_string(), affected.len()));
        serde_json::to_writer(
            &mut out,
            &json!({
                "id": fid,
                "title": title,
                "severity": sev,
                "category": cat,
                "recommendation": format!("Review and remediate: {title}."),
                "affected_identities": affected,
            }),
        )
        .expect("write finding");
    }
    out.extend_from_slice(b"\n]}\n");
    st.bytes = out.len();
    (out, st)
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// A one-line description of a generated scan.
pub fn describe(st: &GenStats) -> String {
    let f: Vec<String> = st
        .findings
        .iter()
        .map(|(id, n)| format!("{id}={n}"))
        .collect();
    format!(
        "{} identities ({} members, {} guests, {} service; GA active {}, GA eligible {}, other admins {}, guests with roles {}; disabled {}, stale {}, never signed in {}, no MFA {}, risk>=70 {}; {} memberships), {}; findings: {}",
        st.identities,
        st.members,
        st.guests,
        st.service,
        st.ga_active,
        st.ga_eligible,
        st.other_admins,
        st.guest_roles,
        st.disabled,
        st.stale,
        st.never,
        st.no_mfa,
        st.high_risk,
        st.memberships,
        super::util::mib(st.bytes as u64),
        f.join(" ")
    )
}
