//! Property tests on stable Rust (deterministic pseudo-random loops, no extra dependency) for
//! the parsers that face the network: the authentication headers, the canonical strings, the
//! device route parser, the report decoder and the key / `wait` / `If-None-Match` parsers.
//! Properties: nothing panics on any input, signing then verifying round-trips for every
//! valid input, and changing any signed part of a request or response makes it fail.
//!
//! `APOLLO_PROPTEST_CASES` sets the number of cases per property (default 3000; CI runs the
//! default), `APOLLO_PROPTEST_SEED` the seed (default fixed, printed on failure).

use apollo_protocol::auth::{
    self, AuthError, AuthVersion, HEADER_AUTH_VERSION, HEADER_DEVICE, HEADER_KEY_ID, HEADER_NONCE,
    HEADER_SIGNATURE, HEADER_TIMESTAMP,
};
use apollo_protocol::keys::{DeviceKey, MasterKey, MasterKeyRing, parse_credential_id};
use apollo_protocol::wire::{
    self, DesiredDocument, DesiredProcess, ObservedProcess, Report, parse_device_route,
    valid_device_name,
};
use http::{HeaderMap, HeaderValue};

/// A small deterministic generator (PCG-style LCG with an output permutation).
struct Gen {
    state: u64,
}

impl Gen {
    fn new(salt: u64) -> Gen {
        let seed = std::env::var("APOLLO_PROPTEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_A901_10DE_u64);
        Gen {
            state: seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = self.state;
        (x ^ (x >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (x >> 32)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn string(&mut self, alphabet: &str, max_len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let len = self.below(max_len + 1);
        (0..len).map(|_| *self.pick(&chars)).collect()
    }

    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A valid DNS-1123 subdomain.
    fn device(&mut self) -> String {
        let labels = 1 + self.below(3);
        (0..labels)
            .map(|_| {
                let inner = self.string("abcxyz0189-", 8);
                format!(
                    "{}{}{}",
                    self.string_nonempty("az09"),
                    inner,
                    self.string_nonempty("az09")
                )
                .replace("--", "-")
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn string_nonempty(&mut self, alphabet: &str) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        self.pick(&chars).to_string()
    }

    fn nonce(&mut self) -> String {
        let len = 16 + self.below(49);
        let chars: Vec<char> = "abcdefABCDEF0123456789-_".chars().collect();
        (0..len).map(|_| *self.pick(&chars)).collect()
    }

    /// Text rich in the characters parsers care about.
    fn nasty(&mut self, max_len: usize) -> String {
        self.string(
            "aZ09-_.:/?=&,*\"W \t\\\n\r{}[]é\u{0}\u{1b}\u{202e}%#v2",
            max_len,
        )
    }
}

fn cases() -> usize {
    std::env::var("APOLLO_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

const NOW: i64 = 1_764_115_200;

fn master(g: &mut Gen) -> MasterKey {
    let mut secret = [0u8; 32];
    for b in &mut secret {
        *b = g.next() as u8;
    }
    MasterKey::new(&format!("k{}", g.string("abc019-_", 8)), secret).unwrap()
}

/// A random valid request: (key, method, path and query, If-None-Match, body, ts, nonce, version).
struct Req {
    key: DeviceKey,
    method: &'static str,
    pq: String,
    inm: Option<String>,
    body: Vec<u8>,
    ts: i64,
    nonce: String,
    version: AuthVersion,
}

fn request(g: &mut Gen, m: &MasterKey) -> Req {
    let device = g.device();
    let epoch = if g.chance(50) {
        0
    } else {
        g.below(999_990) as u32
    };
    let key = m.derive_at(&device, epoch);
    let method = *g.pick(&["GET", "POST"]);
    let mut pq = if method == "GET" {
        wire::desired_path(&device)
    } else {
        wire::report_path(&device)
    };
    if g.chance(50) {
        pq.push_str(&format!("?wait={}", g.string("0123456789smh", 5)));
    }
    let inm = g
        .chance(60)
        .then(|| format!("\"{}\"", g.string("0123456789abcdef", 32)));
    Req {
        key,
        method,
        pq,
        inm,
        body: g.bytes(200),
        ts: NOW - 60 + g.below(121) as i64,
        nonce: g.nonce(),
        version: if g.chance(50) {
            AuthVersion::V1
        } else {
            AuthVersion::V2
        },
    }
}

fn headers_for(r: &Req) -> HeaderMap {
    let signed = match r.version {
        AuthVersion::V1 => auth::sign_request(&r.key, r.method, &r.pq, &r.body, r.ts, &r.nonce),
        AuthVersion::V2 => auth::sign_request_v2(
            &r.key,
            r.method,
            &r.pq,
            r.inm.as_deref(),
            &r.body,
            r.ts,
            &r.nonce,
        ),
    };
    let mut h = HeaderMap::new();
    signed.apply(&mut h);
    if let Some(inm) = &r.inm {
        h.insert("if-none-match", HeaderValue::from_str(inm).unwrap());
    }
    h
}

fn verify(
    ring: &MasterKeyRing,
    r: &Req,
    h: &HeaderMap,
) -> Result<auth::VerifiedRequest, AuthError> {
    auth::verify_request(
        ring,
        r.key.device(),
        r.method,
        &r.pq,
        h,
        &r.body,
        NOW,
        auth::DEFAULT_SKEW_SECS,
    )
}

#[test]
fn signed_requests_and_responses_round_trip_and_any_change_breaks_them() {
    let mut g = Gen::new(1);
    for case in 0..cases() {
        let m = master(&mut g);
        let ring = MasterKeyRing::from(m.clone());
        let r = request(&mut g, &m);
        let h = headers_for(&r);
        let v = verify(&ring, &r, &h)
            .unwrap_or_else(|e| panic!("case {case}: valid request refused: {e}"));
        assert_eq!(v.epoch, r.key.epoch());
        assert_eq!(v.version, r.version);
        let bound_inm = match r.version {
            AuthVersion::V1 => None,
            AuthVersion::V2 => r.inm.clone(),
        };
        assert_eq!(v.if_none_match, bound_inm);

        // The response round-trips, and any change of a signed part fails.
        let status = *g.pick(&[200u16, 304, 400, 429]);
        let etag = g
            .chance(70)
            .then(|| format!("\"{}\"", g.string("0123456789abcdef", 32)));
        let body = g.bytes(100);
        let sig = v.sign_response(status, etag.as_deref(), &body);
        let check = |status, etag: Option<&str>, body: &[u8], inm: Option<&str>| {
            auth::verify_response_versioned(
                &r.key,
                r.version,
                status,
                &r.nonce,
                etag,
                body,
                inm,
                Some(&sig),
            )
        };
        assert_eq!(
            check(status, etag.as_deref(), &body, bound_inm.as_deref()),
            Ok(())
        );
        assert!(check(status + 1, etag.as_deref(), &body, bound_inm.as_deref()).is_err());
        let mut other_body = body.clone();
        other_body.push(b'x');
        assert!(check(status, etag.as_deref(), &other_body, bound_inm.as_deref()).is_err());
        assert!(check(status, Some("\"forged\""), &body, bound_inm.as_deref()).is_err());
        if r.version == AuthVersion::V2 {
            assert!(check(status, etag.as_deref(), &body, Some("*")).is_err());
        }

        // Changing any one signed request part fails verification.
        let mutation = g.below(8);
        let mut t = h.clone();
        let mut body = r.body.clone();
        let mut pq = r.pq.clone();
        match mutation {
            0 => body.push(b'!'),
            1 => pq.push_str("&x=1"),
            2 => {
                t.insert(HEADER_TIMESTAMP, HeaderValue::from(r.ts + 1));
            }
            3 => {
                t.insert(HEADER_NONCE, HeaderValue::from_str(&g.nonce()).unwrap());
            }
            4 => {
                let other = m.derive_at(r.key.device(), r.key.epoch() + 1);
                t.insert(
                    HEADER_KEY_ID,
                    HeaderValue::from_str(other.key_id()).unwrap(),
                );
            }
            5 => {
                // Flip the version header (a downgrade, or an upgrade claim).
                if t.remove(HEADER_AUTH_VERSION).is_none() {
                    t.insert(HEADER_AUTH_VERSION, HeaderValue::from_static("v2"));
                }
            }
            6 if r.version == AuthVersion::V2 => {
                t.insert("if-none-match", HeaderValue::from_static("*"));
            }
            _ => {
                let sig = t
                    .get(HEADER_SIGNATURE)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                let i = g.below(64);
                let mut chars: Vec<char> = sig.chars().collect();
                chars[i] = if chars[i] == '0' { '1' } else { '0' };
                let s: String = chars.into_iter().collect();
                t.insert(HEADER_SIGNATURE, HeaderValue::from_str(&s).unwrap());
            }
        }
        let changed = Req {
            key: r.key.clone(),
            method: r.method,
            pq,
            inm: r.inm.clone(),
            body,
            ts: r.ts,
            nonce: r.nonce.clone(),
            version: r.version,
        };
        assert!(
            verify(&ring, &changed, &t).is_err(),
            "case {case}: mutation {mutation} still verifies"
        );
    }
}

#[test]
fn the_auth_header_parser_never_panics_on_garbage() {
    let mut g = Gen::new(2);
    let m = MasterKey::new("k1", [9; 32]).unwrap();
    let ring = MasterKeyRing::from(m.clone());
    let names = [
        HEADER_DEVICE,
        HEADER_KEY_ID,
        HEADER_TIMESTAMP,
        HEADER_NONCE,
        HEADER_SIGNATURE,
        HEADER_AUTH_VERSION,
        "if-none-match",
    ];
    for _ in 0..cases() {
        let r = request(&mut g, &m);
        let mut h = if g.chance(50) {
            headers_for(&r)
        } else {
            HeaderMap::new()
        };
        for _ in 0..g.below(6) {
            let name = *g.pick(&names);
            let value = g.nasty(80);
            let Ok(value) = HeaderValue::from_str(&value) else {
                continue;
            };
            if g.chance(50) {
                h.insert(name, value);
            } else {
                h.append(name, value);
            }
        }
        let pq = if g.chance(50) {
            r.pq.clone()
        } else {
            g.nasty(60)
        };
        let _ = auth::verify_request(
            &ring,
            &g.nasty(20),
            &g.nasty(6),
            &pq,
            &h,
            &g.bytes(50),
            g.next() as i64,
            g.next() as i64,
        );
        let _ = auth::verify_response_versioned(
            &r.key,
            r.version,
            g.next() as u16,
            &g.nasty(40),
            Some(&g.nasty(40)),
            &g.bytes(30),
            Some(&g.nasty(40)),
            Some(&g.nasty(70)),
        );
    }
}

#[test]
fn canonical_strings_have_one_field_per_line() {
    let mut g = Gen::new(3);
    let m = MasterKey::new("k1", [3; 32]).unwrap();
    for _ in 0..cases() {
        let r = request(&mut g, &m);
        let (dev, kid) = (r.key.device(), r.key.key_id());
        let v1 = auth::canonical_request(r.method, &r.pq, r.ts, &r.nonce, &r.body, dev, kid);
        let v2 = auth::canonical_request_v2(
            r.method,
            &r.pq,
            r.ts,
            &r.nonce,
            &r.body,
            dev,
            kid,
            r.inm.as_deref(),
        );
        let l1: Vec<&str> = v1.split('\n').collect();
        let l2: Vec<&str> = v2.split('\n').collect();
        assert_eq!(l1.len(), 9);
        assert_eq!(l2.len(), 10);
        assert_eq!(l1[..8], l2[..8]);
        assert_eq!(l2[2], r.pq);
        assert_eq!(l2[8], r.inm.as_deref().unwrap_or(""));
        assert_eq!((l1[8], l2[9]), ("v1", "v2"));
        assert_eq!(l2[7], kid);
        assert_eq!(
            parse_credential_id(kid).map(|(_, e)| e),
            Some(r.key.epoch())
        );
    }
}

#[test]
fn the_device_route_parser_never_panics_and_round_trips() {
    let mut g = Gen::new(4);
    for _ in 0..cases() {
        let device = g.device();
        assert!(valid_device_name(&device), "{device:?}");
        assert_eq!(
            parse_device_route(&wire::desired_path(&device)),
            Some(wire::DeviceRoute::Desired(device.as_str()))
        );
        assert_eq!(
            parse_device_route(&wire::report_path(&device)),
            Some(wire::DeviceRoute::Report(device.as_str()))
        );
        let junk = format!(
            "{}{}",
            g.pick(&["/v1/devices/", "/v1/devices//", "/v2/devices/", "", "/"]),
            g.nasty(40)
        );
        if let Some(route) = parse_device_route(&junk) {
            assert!(!route.device().contains('/'), "{junk:?}");
        }
        let _ = valid_device_name(&junk);
        let _ = wire::parse_wait(Some(&g.nasty(20)));
        let _ = wire::if_none_match_matches(&g.nasty(40), &g.nasty(10));
        let _ = wire::revision_from_etag(&g.nasty(20));
        let _ = parse_credential_id(&g.nasty(12));
        let _ = g.nasty(100).parse::<DeviceKey>();
        let _ = g.nasty(100).parse::<MasterKey>();
        let _ = MasterKeyRing::parse(&g.nasty(200));
    }
}

#[test]
fn the_report_decoder_never_panics_and_round_trips() {
    let mut g = Gen::new(5);
    for _ in 0..cases() {
        let report = Report {
            agent_version: g.string("0123456789.-abc", 12),
            instance_id: g.string("0123456789abcdef", 32),
            revision: g.chance(50).then(|| g.string("0123456789abcdef", 32)),
            observed: (0..g.below(4))
                .map(|_| ObservedProcess {
                    name: g.device(),
                    spec_hash: g.string("0123456789abcdef", 16),
                    generation: g.chance(50).then(|| g.next() as i64),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&report).unwrap();
        assert_eq!(serde_json::from_slice::<Report>(&bytes).unwrap(), report);
        // Truncations, byte flips and splices of a valid report, and plain garbage.
        let mut mutated = bytes.clone();
        match g.below(4) {
            0 => mutated.truncate(g.below(bytes.len())),
            1 => {
                let i = g.below(mutated.len());
                mutated[i] = g.next() as u8;
            }
            2 => {
                let i = g.below(mutated.len());
                let junk = g.nasty(20).into_bytes();
                mutated.splice(i..i, junk);
            }
            _ => mutated = g.bytes(200),
        }
        let _ = serde_json::from_slice::<Report>(&mutated);
        let _ = serde_json::from_slice::<wire::ReportAck>(&mutated);
        let _ = serde_json::from_slice::<DesiredDocument>(&mutated);
        let _ = serde_json::from_slice::<wire::ErrorBody>(&mutated);
    }
    // Deep nesting is refused by the JSON parser's recursion limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(serde_json::from_str::<Report>(&deep).is_err());
    let doc = DesiredDocument::encode(
        "d",
        vec![DesiredProcess {
            namespace: "n".into(),
            name: "p".into(),
            generation: 1,
            spec_hash: "0".into(),
            spec: serde_json::json!({}),
        }],
    );
    assert!(serde_json::from_slice::<DesiredDocument>(&doc.body).is_ok());
}
