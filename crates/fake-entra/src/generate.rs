//! A realistic big tenant, deterministic from a seed: the population a posture
//! scan meets (guests, disabled and stale accounts, missing MFA, risky users,
//! dynamic / synced / role-assignable groups, permanent and PIM role
//! assignments, eligibilities, break-glass Global Administrators). Only plain
//! fields are kept per user; the JSON is built when a page is read.

use crate::details::{Generated, Registration, Risk, RoleEligibility, SignIn, UserDetails};
use crate::state::{State, UserEntry};
use crate::util::{rfc3339, unix_now};
use crate::{Group, PimSchedule, RoleAssignment, User};
use std::collections::HashSet;

const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const PRIVILEGED_ROLE_ADMIN: &str = "e8611ab8-c189-46e8-94e1-60213ab1f814";
const SECURITY_ADMIN: &str = "194ae4cb-b126-40b2-bd5b-6091b380977d";
const EXCHANGE_ADMIN: &str = "29232cdf-9323-42fd-ade2-1d097af3e4de";
const APPLICATION_ADMIN: &str = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3";
/// Roles handed out to ordinary administrators.
const OTHER_ROLES: &[&str] = &[
    "fe930be7-5e62-47db-91af-98c3a49a38b1",
    SECURITY_ADMIN,
    EXCHANGE_ADMIN,
    "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "b1be1c3e-b65d-4f19-8427-f6fa0d97feb9",
    APPLICATION_ADMIN,
    "f2ef992c-3afb-46b9-b7cf-a126ee74c451",
    PRIVILEGED_ROLE_ADMIN,
];

/// Method sets of users registered for MFA.
const METHOD_SETS: &[&[&str]] = &[
    &["microsoftAuthenticatorPush", "softwareOneTimePasscode"],
    &["mobilePhone"],
    &["microsoftAuthenticatorPush", "mobilePhone", "email"],
    &["fido2SecurityKey", "microsoftAuthenticatorPush"],
    &["passKeyDeviceBound"],
    &["windowsHelloForBusiness", "microsoftAuthenticatorPush"],
];

const DAY: i64 = 86_400;

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Below `n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True `per_10k` times in 10,000.
    fn chance(&mut self, per_10k: u64) -> bool {
        self.below(10_000) < per_10k
    }
}

/// A GUID-shaped id, unique per (`kind`, `index`), random-looking from the seed.
fn gen_id(rng: &mut Rng, kind: u64, index: usize) -> String {
    let r = rng.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (r >> 32) as u32,
        (r >> 16) as u16,
        (r >> 4) & 0xfff,
        0x8000 | (kind & 0xfff),
        index as u64 & 0xffff_ffff_ffff
    )
}

/// `days` days (and some seconds) before `now`, RFC 3339.
fn ago(rng: &mut Rng, now: i64, days: i64) -> String {
    rfc3339(now - days * DAY - rng.below(DAY as u64) as i64)
}

/// Picks up to `k` distinct entries of `pool`.
fn sample(rng: &mut Rng, pool: &[String], k: usize) -> Vec<String> {
    let mut idx: Vec<usize> = (0..k.min(pool.len()))
        .map(|_| rng.below(pool.len() as u64) as usize)
        .collect();
    idx.sort_unstable();
    idx.dedup();
    idx.into_iter().map(|i| pool[i].clone()).collect()
}

/// Fills `st`; see [`crate::FakeTenant::generate`].
pub(crate) fn generate(st: &mut State, n_users: usize, seed: u64) -> Generated {
    let mut rng = Rng(seed ^ 0x005E_ED0F_FA4E_E47A);
    let now = unix_now();
    let domain = format!(
        "{}.onmicrosoft.com",
        st.tenant_name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    );
    let mut g = Generated::default();
    let mut members: Vec<String> = Vec::new();
    let mut synced: Vec<String> = Vec::new();
    for i in 0..n_users {
        let id = gen_id(&mut rng, 1, i);
        let guest = rng.chance(500);
        let enabled = !rng.chance(1000);
        let on_prem = !guest && rng.chance(3000);
        let (upn, name) = if guest {
            (
                format!("guest{i}_partner.example#EXT#@{domain}"),
                format!("Guest {i}"),
            )
        } else {
            (format!("user{i}@{domain}"), format!("User {i}"))
        };
        let r = rng.below(10_000);
        let (sign_in, created_days) = if r < 300 {
            (None, 1 + rng.below(400) as i64)
        } else {
            let base = if r < 1800 {
                91 + rng.below(630) as i64
            } else {
                rng.below(90) as i64
            };
            let interactive = base + rng.below(3) as i64;
            let non_interactive = base + rng.below(3) as i64;
            let successful = interactive.min(non_interactive);
            if successful > 90 {
                g.stale += 1;
            }
            (
                Some(SignIn {
                    last: Some(ago(&mut rng, now, interactive)),
                    last_non_interactive: Some(ago(&mut rng, now, non_interactive)),
                    last_successful: Some(rfc3339(now - successful * DAY)),
                }),
                base + 3 + rng.below(365) as i64,
            )
        };
        let registration = if rng.chance(2000) {
            rng.chance(5000)
                .then(|| Registration::with_methods(&["email"]))
        } else {
            let set = METHOD_SETS[rng.below(METHOD_SETS.len() as u64) as usize];
            Some(Registration::with_methods(set))
        };
        let risk = rng.chance(50).then(|| {
            let (level, state, detail) = match rng.below(3) {
                0 => ("high", "atRisk", "none"),
                1 => ("medium", "atRisk", "none"),
                _ => ("low", "remediated", "userPerformedSecuredPasswordReset"),
            };
            let days = rng.below(30) as i64;
            Risk {
                level: level.into(),
                state: state.into(),
                detail: detail.into(),
                last_updated: Some(ago(&mut rng, now, days)),
            }
        });
        g.guests += usize::from(guest);
        g.disabled += usize::from(!enabled);
        g.never_signed_in += usize::from(sign_in.is_none());
        g.without_mfa += usize::from(!registration.as_ref().is_some_and(|r| r.is_mfa_registered));
        g.synced_users += usize::from(on_prem);
        if let Some(r) = &risk {
            g.risky += 1;
            g.high_risk_at_risk += usize::from(r.level == "high" && r.state == "atRisk");
        }
        if !guest {
            members.push(id.clone());
        }
        if on_prem {
            synced.push(id.clone());
        }
        let details = UserDetails {
            created: Some(ago(&mut rng, now, created_days)),
            on_premises_sync_enabled: on_prem.then_some(true),
            sign_in,
            registration,
            risk,
        };
        insert_user(st, &id, upn, name, "Member", enabled, details, guest);
    }
    g.users = n_users;

    // Two break-glass accounts: cloud-only, enabled, FIDO2, rarely used.
    for k in 0..2 {
        let id = gen_id(&mut rng, 2, k);
        let details = UserDetails {
            created: Some(ago(&mut rng, now, 700)),
            on_premises_sync_enabled: None,
            sign_in: Some(SignIn {
                last: Some(ago(&mut rng, now, 30)),
                last_non_interactive: None,
                last_successful: Some(ago(&mut rng, now, 30)),
            }),
            registration: Some(Registration::with_methods(&["fido2SecurityKey"])),
            risk: None,
        };
        insert_user(
            st,
            &id,
            format!("breakglass0{}@{domain}", k + 1),
            format!("Break Glass {}", k + 1),
            "Member",
            true,
            details,
            false,
        );
        g.break_glass.push(id);
    }
    g.users += 2;

    // About 50 groups.
    let mut role_groups = Vec::new();
    for k in 0..50usize {
        let id = gen_id(&mut rng, 5, k);
        let (name, dynamic, on_prem, assignable, mail, security, group_members) = match k {
            0 => (
                "All Employees".to_string(),
                true,
                false,
                false,
                false,
                true,
                members.clone(),
            ),
            1..=9 => {
                let m = sample(&mut rng, &members, members.len() / 50 + 1);
                (
                    format!("Department {k}"),
                    true,
                    false,
                    false,
                    false,
                    true,
                    m,
                )
            }
            10..=19 => {
                let m = sample(&mut rng, &synced, synced.len() / 10 + 1);
                (format!("SG-OnPrem-{k}"), false, true, false, false, true, m)
            }
            20..=24 => {
                let size = 2 + rng.below(4) as usize;
                let m = sample(&mut rng, &members, size);
                (
                    format!("Role Group {k}"),
                    false,
                    false,
                    true,
                    false,
                    true,
                    m,
                )
            }
            25..=29 => {
                let m = sample(&mut rng, &members, members.len() / 100 + 1);
                (format!("Team {k}"), false, false, false, true, false, m)
            }
            _ => {
                let m = sample(&mut rng, &members, members.len() / 100 + 1);
                (
                    format!("Security Group {k}"),
                    false,
                    false,
                    false,
                    false,
                    true,
                    m,
                )
            }
        };
        if dynamic {
            let rule = if k == 0 {
                "(user.userType -eq \"Member\")".to_string()
            } else {
                format!("(user.department -eq \"Department {k}\")")
            };
            st.group_rules.insert(id.clone(), rule);
            g.dynamic_groups += 1;
        }
        g.synced_groups += usize::from(on_prem);
        g.role_assignable_groups += usize::from(assignable);
        g.memberships += group_members.len();
        if assignable {
            role_groups.push(id.clone());
        }
        st.groups.insert(
            id.clone(),
            Group {
                id: id.clone(),
                display_name: name,
                dynamic,
                mail_enabled: mail,
                security_enabled: security,
                on_premises_sync_enabled: on_prem,
                is_assignable_to_role: assignable,
            },
        );
        st.members.insert(id, group_members);
        g.groups += 1;
    }

    // About 30 active role assignments.
    let before = st.role_assignments.len();
    let assign =
        |st: &mut State, rng: &mut Rng, principal: &str, role: &str, pim: Option<PimSchedule>| {
            let id = gen_id(rng, 3, st.role_assignments.len() - before);
            st.role_assignments.push(RoleAssignment {
                id: id.clone(),
                principal_id: principal.to_string(),
                role_definition_id: role.to_string(),
                directory_scope_id: "/".into(),
                pim_managed: pim.is_some(),
            });
            if let Some(s) = pim {
                st.pim_schedules.insert(id, s);
            }
        };
    let activated = |rng: &mut Rng| PimSchedule {
        start: ago(rng, now, 0),
        end: Some(rfc3339(now + 8 * 3600)),
        assignment_type: "Activated".into(),
    };
    let time_bound = |rng: &mut Rng| PimSchedule {
        start: ago(rng, now, 30),
        end: Some(rfc3339(now + 180 * DAY)),
        assignment_type: "Assigned".into(),
    };
    let break_glass = g.break_glass.clone();
    for bg in &break_glass {
        assign(st, &mut rng, bg, GLOBAL_ADMIN, None);
        g.permanent_assignments += 1;
        g.global_admins += 1;
    }
    let admins = if members.is_empty() {
        break_glass.clone()
    } else {
        sample(&mut rng, &members, 40)
    };
    let mut admin_at = 0usize;
    let mut next_admin = || {
        let a = admins[admin_at % admins.len()].clone();
        admin_at += 1;
        a
    };
    // One permanent and two PIM-activated Global Administrators.
    let ga = next_admin();
    assign(st, &mut rng, &ga, GLOBAL_ADMIN, None);
    g.permanent_assignments += 1;
    g.global_admins += 1;
    for _ in 0..2 {
        let ga = next_admin();
        let s = activated(&mut rng);
        assign(st, &mut rng, &ga, GLOBAL_ADMIN, Some(s));
        g.pim_assignments += 1;
        g.global_admins += 1;
    }
    // Roles held through role-assignable groups.
    for (grp, role) in
        role_groups
            .iter()
            .zip([SECURITY_ADMIN, EXCHANGE_ADMIN, PRIVILEGED_ROLE_ADMIN])
    {
        assign(st, &mut rng, grp, role, None);
        g.group_assignments += 1;
        g.permanent_assignments += 1;
    }
    // An application holding a role.
    let sp = gen_id(&mut rng, 6, 0);
    st.service_principals
        .insert(sp.clone(), "Provisioning Connector".into());
    assign(st, &mut rng, &sp, APPLICATION_ADMIN, None);
    g.service_principal_assignments += 1;
    g.permanent_assignments += 1;
    // Ordinary administrators, some permanent, some through PIM.
    while st.role_assignments.len() - before < 30 {
        let who = next_admin();
        let role = OTHER_ROLES[rng.below(OTHER_ROLES.len() as u64) as usize];
        let pim = match rng.below(5) {
            0 => Some(activated(&mut rng)),
            1 => Some(time_bound(&mut rng)),
            _ => None,
        };
        if pim.is_some() {
            g.pim_assignments += 1;
        } else {
            g.permanent_assignments += 1;
        }
        assign(st, &mut rng, &who, role, pim);
    }
    g.role_assignments = st.role_assignments.len() - before;

    // Eligible assignments.
    let mut seen = HashSet::new();
    for k in 0..10usize {
        let who = next_admin();
        let role = if k == 0 {
            GLOBAL_ADMIN
        } else {
            OTHER_ROLES[rng.below(OTHER_ROLES.len() as u64) as usize]
        };
        if !seen.insert((who.clone(), role)) {
            continue;
        }
        let end = (k % 2 == 0).then(|| rfc3339(now + 365 * DAY));
        st.eligibilities.push(RoleEligibility {
            id: gen_id(&mut rng, 4, k),
            principal_id: who,
            role_definition_id: role.into(),
            directory_scope_id: "/".into(),
            start: ago(&mut rng, now, 60),
            end,
            member_type: "Direct".into(),
        });
        g.eligibilities += 1;
    }
    g
}

/// Inserts a generated user.
#[allow(clippy::too_many_arguments)]
fn insert_user(
    st: &mut State,
    id: &str,
    upn: String,
    name: String,
    member_type: &str,
    enabled: bool,
    details: UserDetails,
    guest: bool,
) {
    st.users.insert(
        id.to_string(),
        UserEntry {
            user: User {
                id: id.to_string(),
                user_principal_name: upn,
                display_name: name,
                user_type: if guest { "Guest" } else { member_type }.into(),
                account_enabled: enabled,
            },
            sessions_valid_from: None,
            details,
        },
    );
}
