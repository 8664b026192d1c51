//! The platform's app rules as pure functions: expiry, dates, certificate
//! names, and which hostnames an app's status lets route. Every rule cites
//! `mse-app-config.md` (the platform's app configuration docs, summarised
//! beside DESIGN.md); nothing here reads a clock, a file or the network, so
//! the tests pin `now` and the local time zone.

use std::time::Duration;

use chrono::{DateTime, Months, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;

use super::violation::{Field, Violation};
use crate::config::apps::AppsConfig;

/// "Free hardware (`4g-eu-001`): expiry forced to 4 hours after deployment."
pub const FREE_HARDWARE_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(4);

/// How far in the future a `deployed_at` may lie (clock skew between the
/// platform and the proxy). Beyond it a deployment date is refused: it would
/// stretch the free-hardware cap.
pub const DEPLOYED_AT_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Which rule set an app's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryRule {
    /// The app asked for it, and no rule shortened it.
    Requested,
    /// Free hardware: 4 hours after deployment.
    FreeHardware,
    /// No date asked: the owner certificate's notAfter.
    OwnerCertificate,
    /// No date asked, no owner certificate: the configured lifetime.
    DefaultLifetime,
}

/// An app's effective expiry and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub at: DateTime<Utc>,
    pub rule: ExpiryRule,
}

/// What the expiry rules look at.
#[derive(Debug, Clone, Copy)]
pub struct ExpiryInput<'a> {
    /// The expiry the app asked for (`[cloud] expiration_date`).
    pub requested: Option<DateTime<Utc>>,
    pub hardware: &'a str,
    pub deployed_at: DateTime<Utc>,
    /// The owner certificate chain's earliest notAfter, if there is one.
    pub certificate_not_after: Option<DateTime<Utc>>,
}

/// The app's expiry (mse-app-config.md, "Expiry rules"):
/// - a requested expiry in the past is refused ("must be in the future");
/// - with an owner certificate the expiry may not be later than its
///   notAfter, and without a requested date it is the notAfter; a
///   certificate already expired is refused;
/// - otherwise, with no requested date, the default lifetime (one year);
/// - free hardware lives at most 4 hours from deployment, whatever it asks:
///   the earlier of the above and `deployed_at + 4h`;
/// - an expiry that has passed by `now` is refused: the app would be gone
///   before it is routed.
///
/// Every violation is returned, not just the first.
pub fn expiry(
    input: &ExpiryInput<'_>,
    policy: &AppsConfig,
    now: DateTime<Utc>,
) -> Result<Expiry, Vec<Violation>> {
    let mut v = Vec::new();
    if let Some(r) = input.requested {
        if r <= now {
            v.push(Violation::new(
                Field::ExpiresAt,
                format!("{} is in the past (now is {})", stamp(r), stamp(now)),
            ));
        }
    }
    if let Some(na) = input.certificate_not_after {
        if na <= now {
            v.push(Violation::new(
                Field::OwnerCertificate,
                format!("expired at {}", stamp(na)),
            ));
        }
        if let Some(r) = input.requested.filter(|r| *r > na) {
            v.push(Violation::new(
                Field::ExpiresAt,
                format!(
                    "{} is later than the owner certificate's notAfter {}; an app may not outlive its certificate",
                    stamp(r),
                    stamp(na)
                ),
            ));
        }
    }
    if now
        .checked_add_signed(DEPLOYED_AT_SKEW)
        .is_some_and(|limit| input.deployed_at > limit)
    {
        v.push(Violation::new(
            Field::DeployedAt,
            format!("{} is in the future", stamp(input.deployed_at)),
        ));
    }
    if !v.is_empty() {
        return Err(v);
    }

    let mut e = match (input.requested, input.certificate_not_after) {
        (Some(at), _) => Expiry {
            at,
            rule: ExpiryRule::Requested,
        },
        (None, Some(at)) => Expiry {
            at,
            rule: ExpiryRule::OwnerCertificate,
        },
        (None, None) => match add_lifetime(input.deployed_at, policy.default_lifetime) {
            Some(at) => Expiry {
                at,
                rule: ExpiryRule::DefaultLifetime,
            },
            None => {
                return Err(vec![Violation::new(
                    Field::DeployedAt,
                    "the default lifetime from this date is out of range",
                )])
            }
        },
    };
    if is_free(policy, input.hardware) {
        // Checked: a date at the end of time has no cap to add, not a panic.
        let cap = input
            .deployed_at
            .checked_add_signed(FREE_HARDWARE_LIFETIME)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if cap < e.at {
            e = Expiry {
                at: cap,
                rule: ExpiryRule::FreeHardware,
            };
        }
    }
    if e.at <= now {
        let why = match e.rule {
            ExpiryRule::FreeHardware => format!(
                "free hardware `{}` lives 4 hours from deployment: deployed at {}, it expired at {}",
                input.hardware,
                stamp(input.deployed_at),
                stamp(e.at)
            ),
            _ => format!(
                "deployed at {}, the app's lifetime ended at {}",
                stamp(input.deployed_at),
                stamp(e.at)
            ),
        };
        return Err(vec![Violation::new(Field::DeployedAt, why)]);
    }
    Ok(e)
}

/// Whether `hardware` is free hardware under `policy`.
pub fn is_free(policy: &AppsConfig, hardware: &str) -> bool {
    policy.free_hardware.iter().any(|h| h == hardware)
}

/// `from` plus the lifetime: a calendar year when none is configured
/// ("Otherwise, with no `expiration_date`: one year").
fn add_lifetime(from: DateTime<Utc>, lifetime: Option<Duration>) -> Option<DateTime<Utc>> {
    match lifetime {
        None => from.checked_add_months(Months::new(12)),
        Some(d) => from.checked_add_signed(chrono::TimeDelta::from_std(d).ok()?),
    }
}

/// RFC 3339 at second precision, UTC, as messages show times.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Parses a time that must carry its zone: RFC 3339, or the docs' own
/// example form `2023-06-29 00:00:00+00:00`. The admin API takes only these:
/// a proxy has no business guessing the platform's local time.
pub fn parse_zoned(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!("`{s}` is not an RFC 3339 time with a zone, such as `2030-06-29T00:00:00Z`")
        })
}

/// Parses `[cloud] expiration_date`: RFC 3339, and, as documented, "a value
/// without a zone is taken in local time" (`local`: the machine's zone in
/// the CLI, a fixed offset in tests). A local time that a DST change makes
/// ambiguous takes its earlier instant (the shorter life); one that does not
/// exist is refused.
pub fn parse_local<Tz: TimeZone>(s: &str, local: &Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = parse_zoned(s) {
        return Ok(t);
    }
    let s = s.trim();
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .ok_or_else(|| {
            format!(
                "`{s}` is not an RFC 3339 time, such as `2030-06-29T00:00:00Z` (or without a zone, in local time)"
            )
        })?;
    local
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("`{s}` does not exist in local time (a DST change skips it)"))
}

/// Whether a certificate naming `names` (lowercase DNS names from its
/// subjectAltName) covers `domain`: "exactly or through a wildcard of its
/// parent (`*.domain.com` covers `example.domain.com`)".
pub fn names_cover(names: &[String], domain: &str) -> bool {
    let parent_wildcard = domain.split_once('.').map(|(_, p)| format!("*.{p}"));
    names
        .iter()
        .any(|n| n == domain || parent_wildcard.as_deref() == Some(n.as_str()))
}

/// An app's status, as the platform reports it (mse-app-config.md, "App
/// states").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Spawning,
    Initializing,
    Running,
    Stopped,
    OnError,
}

/// Which of an app's hostnames route in a status:
/// - `running`: both (its public and its configuration hostname);
/// - `spawning`, `initializing`: the configuration hostname only, if
///   `apps.route_config_host_while_initializing` (the enclave is receiving
///   its secrets through it; the app itself is not up);
/// - `stopped` (final, also reached at expiry): none;
/// - `on_error`: none. The docs say nothing of what an app in error serves;
///   a route to it would hand clients an enclave that is known broken, and
///   the platform redeploys or stops it anyway, so the safe answer is no
///   route (clients get `unrecognized_name`, as for any unknown app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub public: bool,
    pub config: bool,
}

pub fn routed(status: Status, policy: &AppsConfig) -> Routed {
    match status {
        Status::Running => Routed {
            public: true,
            config: true,
        },
        Status::Spawning | Status::Initializing => Routed {
            public: false,
            config: policy.route_config_host_while_initializing,
        },
        Status::Stopped | Status::OnError => Routed {
            public: false,
            config: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn t(s: &str) -> DateTime<Utc> {
        parse_zoned(s).unwrap()
    }

    const NOW: &str = "2030-01-01T12:00:00Z";

    struct Case {
        name: &'static str,
        hardware: &'static str,
        deployed_at: &'static str,
        requested: Option<&'static str>,
        not_after: Option<&'static str>,
        want: Result<(&'static str, ExpiryRule), &'static [Field]>,
    }

    #[test]
    fn expiry_rules() {
        use ExpiryRule::*;
        let cases = [
            Case {
                name: "free hardware, nothing asked: 4 hours after deployment",
                hardware: "4g-eu-001",
                deployed_at: NOW,
                requested: None,
                not_after: None,
                want: Ok(("2030-01-01T16:00:00Z", FreeHardware)),
            },
            Case {
                name: "free hardware asking a year gets 4 hours",
                hardware: "4g-eu-001",
                deployed_at: "2030-01-01T11:00:00Z",
                requested: Some("2031-01-01T00:00:00Z"),
                not_after: None,
                want: Ok(("2030-01-01T15:00:00Z", FreeHardware)),
            },
            Case {
                name: "free hardware asking less than 4 hours gets what it asks",
                hardware: "4g-eu-001",
                deployed_at: NOW,
                requested: Some("2030-01-01T13:00:00Z"),
                not_after: None,
                want: Ok(("2030-01-01T13:00:00Z", Requested)),
            },
            Case {
                name: "free hardware deployed 5 hours ago has expired",
                hardware: "4g-eu-001",
                deployed_at: "2030-01-01T07:00:00Z",
                requested: None,
                not_after: None,
                want: Err(&[Field::DeployedAt]),
            },
            Case {
                name: "free hardware capped below the owner certificate",
                hardware: "4g-eu-001",
                deployed_at: NOW,
                requested: None,
                not_after: Some("2030-03-01T00:00:00Z"),
                want: Ok(("2030-01-01T16:00:00Z", FreeHardware)),
            },
            Case {
                name: "owner certificate is the default",
                hardware: "2g-eu-001",
                deployed_at: NOW,
                requested: None,
                not_after: Some("2030-03-01T00:00:00Z"),
                want: Ok(("2030-03-01T00:00:00Z", OwnerCertificate)),
            },
            Case {
                name: "owner certificate earlier than 4 hours caps free hardware too",
                hardware: "4g-eu-001",
                deployed_at: NOW,
                requested: None,
                not_after: Some("2030-01-01T13:00:00Z"),
                want: Ok(("2030-01-01T13:00:00Z", OwnerCertificate)),
            },
            Case {
                name: "asking before the certificate's notAfter is fine",
                hardware: "2g-eu-001",
                deployed_at: NOW,
                requested: Some("2030-02-01T00:00:00Z"),
                not_after: Some("2030-03-01T00:00:00Z"),
                want: Ok(("2030-02-01T00:00:00Z", Requested)),
            },
            Case {
                name: "asking past the certificate's notAfter is refused",
                hardware: "2g-eu-001",
                deployed_at: NOW,
                requested: Some("2030-04-01T00:00:00Z"),
                not_after: Some("2030-03-01T00:00:00Z"),
                want: Err(&[Field::ExpiresAt]),
            },
            Case {
                name: "an expired owner certificate is refused",
                hardware: "2g-eu-001",
                deployed_at: NOW,
                requested: None,
                not_after: Some("2029-12-31T00:00:00Z"),
                want: Err(&[Field::OwnerCertificate]),
            },
            Case {
                name: "one year by default, a calendar year",
                hardware: "2g-eu-001",
                deployed_at: "2029-03-15T12:00:00Z",
                requested: None,
                not_after: None,
                want: Ok(("2030-03-15T12:00:00Z", DefaultLifetime)),
            },
            Case {
                name: "paid hardware gets what it asks",
                hardware: "2g-eu-001",
                deployed_at: NOW,
                requested: Some("2035-01-01T00:00:00Z"),
                not_after: None,
                want: Ok(("2035-01-01T00:00:00Z", Requested)),
            },
            Case {
                name: "a past date is refused, whatever the hardware",
                hardware: "4g-eu-001",
                deployed_at: NOW,
                requested: Some("2029-12-31T23:59:59Z"),
                not_after: None,
                want: Err(&[Field::ExpiresAt]),
            },
            Case {
                name: "now itself is not the future",
                hardware: "2g-eu-001",
                deployed_at: NOW,
                requested: Some(NOW),
                not_after: None,
                want: Err(&[Field::ExpiresAt]),
            },
            Case {
                name: "every violation is reported",
                hardware: "2g-eu-001",
                deployed_at: "2030-01-02T00:00:00Z",
                requested: Some("2029-06-01T00:00:00Z"),
                not_after: Some("2029-01-01T00:00:00Z"),
                want: Err(&[
                    Field::ExpiresAt,
                    Field::OwnerCertificate,
                    Field::ExpiresAt,
                    Field::DeployedAt,
                ]),
            },
            Case {
                name: "a year ago was a year ago",
                hardware: "2g-eu-001",
                deployed_at: "2028-12-01T00:00:00Z",
                requested: None,
                not_after: None,
                want: Err(&[Field::DeployedAt]),
            },
        ];
        let policy = AppsConfig::default();
        for c in cases {
            let input = ExpiryInput {
                requested: c.requested.map(t),
                hardware: c.hardware,
                deployed_at: t(c.deployed_at),
                certificate_not_after: c.not_after.map(t),
            };
            let got = expiry(&input, &policy, t(NOW));
            match (got, c.want) {
                (Ok(e), Ok((at, rule))) => {
                    assert_eq!((e.at, e.rule), (t(at), rule), "{}", c.name)
                }
                (Err(v), Err(fields)) => assert_eq!(
                    v.iter().map(|v| v.field).collect::<Vec<_>>(),
                    fields,
                    "{}: {v:?}",
                    c.name
                ),
                (got, _) => panic!("{}: got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn configured_lifetime_and_free_list() {
        let policy = AppsConfig {
            free_hardware: vec!["tiny".into()],
            default_lifetime: Some(Duration::from_secs(30 * 24 * 3600)),
            ..AppsConfig::default()
        };
        let now = t(NOW);
        let input = |hardware| ExpiryInput {
            requested: None,
            hardware,
            deployed_at: now,
            certificate_not_after: None,
        };
        let e = expiry(&input("4g-eu-001"), &policy, now).unwrap();
        assert_eq!(
            (e.at, e.rule),
            (t("2030-01-31T12:00:00Z"), ExpiryRule::DefaultLifetime)
        );
        let e = expiry(&input("tiny"), &policy, now).unwrap();
        assert_eq!(
            (e.at, e.rule),
            (t("2030-01-01T16:00:00Z"), ExpiryRule::FreeHardware)
        );
    }

    #[test]
    fn a_time_without_a_zone_is_local_time() {
        let paris_summer = FixedOffset::east_opt(2 * 3600).unwrap();
        let cases = [
            // (written, local zone, UTC instant)
            ("2030-06-29T00:00:00Z", paris_summer, "2030-06-29T00:00:00Z"),
            (
                "2030-06-29 00:00:00+00:00",
                paris_summer,
                "2030-06-29T00:00:00Z",
            ),
            (
                "2030-06-29T00:00:00+05:30",
                paris_summer,
                "2030-06-28T18:30:00Z",
            ),
            ("2030-06-29 00:00:00", paris_summer, "2030-06-28T22:00:00Z"),
            ("2030-06-29T00:00:00", paris_summer, "2030-06-28T22:00:00Z"),
            (
                "2030-06-29T00:00:00.500",
                FixedOffset::west_opt(5 * 3600).unwrap(),
                "2030-06-29T05:00:00.500Z",
            ),
        ];
        for (written, zone, want) in cases {
            assert_eq!(parse_local(written, &zone), Ok(t(want)), "{written}");
        }
        for bad in ["2030-06-29", "tomorrow", "2030-13-01T00:00:00", ""] {
            assert!(parse_local(bad, &paris_summer).is_err(), "{bad}");
        }
        // The admin API takes no local time.
        assert!(parse_zoned("2030-06-29T00:00:00").is_err());
    }

    #[test]
    fn certificate_names_cover_exactly_or_by_parent_wildcard() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let n = names(&["*.domain.com", "exact.other.com"]);
        assert!(names_cover(&n, "example.domain.com"));
        assert!(names_cover(&n, "exact.other.com"));
        assert!(!names_cover(&n, "domain.com"));
        assert!(!names_cover(&n, "a.example.domain.com"));
        assert!(!names_cover(&n, "x.other.com"));
        assert!(!names_cover(&names(&["*.com"]), "com"));
    }

    #[test]
    fn status_decides_which_hosts_route() {
        let on = AppsConfig::default();
        let off = AppsConfig {
            route_config_host_while_initializing: false,
            ..AppsConfig::default()
        };
        let r = |public, config| Routed { public, config };
        for (status, with_on, with_off) in [
            (Status::Running, r(true, true), r(true, true)),
            (Status::Spawning, r(false, true), r(false, false)),
            (Status::Initializing, r(false, true), r(false, false)),
            (Status::Stopped, r(false, false), r(false, false)),
            (Status::OnError, r(false, false), r(false, false)),
        ] {
            assert_eq!(routed(status, &on), with_on, "{status:?}");
            assert_eq!(routed(status, &off), with_off, "{status:?}");
        }
    }
}
