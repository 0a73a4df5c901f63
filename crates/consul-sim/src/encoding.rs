//! Response compression as Consul's HTTP layer does it: every endpoint's answer goes
//! through a gzip handler (`NYTimes/gziphandler` with no minimum size, in 1.8.7), which
//! compresses any non-empty body for a client that accepts gzip. The mux's own answers (an
//! unknown path, a redirect) and Go's `net/http` errors bypass it; the core marks the
//! answers that went through it with `Vary: Accept-Encoding`.

use std::io::Write as _;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::HeaderMap;

/// Whether the request's `Accept-Encoding` accepts gzip, read as the gzip handler reads
/// it (checked on 1.8.7 with curl): only the first `Accept-Encoding` header counts; codings
/// are comma-separated, trimmed and case-insensitive; a coding's `q=` (lower case only) is
/// clamped to 0..1 and a `q` that is not a number drops the coding; a later mention of a
/// coding overrides an earlier one; and gzip is accepted when its weight is above 0.
/// `*` does not count as gzip.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(http::header::ACCEPT_ENCODING) else { return false };
    let Ok(value) = value.to_str() else { return false };
    let mut gzip = 0.0;
    for coding in value.split(',') {
        if let Some(("gzip", q)) = weighted(coding) {
            gzip = q;
        }
    }
    gzip > 0.0
}

/// One coding of an `Accept-Encoding` list and its weight, or `None` when its `q` is not a
/// number or it names no coding. As the gzip handler parses it, every parameter after
/// the coding resets the weight to 1 before it is read, so only a `q=` in the last
/// parameter counts (`gzip;q=0;level=1` is accepted, as Consul accepts it), while a `q` that
/// is not a number drops the coding unless a later `q=` reads well.
fn weighted(coding: &str) -> Option<(&'static str, f64)> {
    let mut parts = coding.split(';');
    let name = parts.next().unwrap_or_default().trim();
    let mut q = 1.0;
    let mut bad = false;
    for param in parts {
        q = 1.0;
        // Only a `q=` decides whether the coding is dropped: the last one read counts.
        if let Some(v) = param.trim().strip_prefix("q=") {
            match v.parse::<f64>() {
                Ok(v) if !v.is_nan() => (q, bad) = (v.clamp(0.0, 1.0), false),
                _ => bad = true,
            }
        }
    }
    if bad || name.is_empty() {
        return None;
    }
    // Only gzip matters here; every other coding is some other coding.
    Some((if name.eq_ignore_ascii_case("gzip") { "gzip" } else { "other" }, q))
}

/// `body` compressed with gzip at the default level (Go's `gzip.DefaultCompression` is
/// level 6 too), or `None` if the encoder failed (it writes to memory, so it does not).
pub(crate) fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder =
        GzEncoder::new(Vec::with_capacity(body.len() / 2 + 32), Compression::default());
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(http::header::ACCEPT_ENCODING, v.parse().expect("header value"));
        }
        accepts_gzip(&headers)
    }

    /// Every row was sent to Consul 1.8.7 with curl; `true` where it answered gzip.
    #[test]
    fn accept_encoding_is_read_as_consul_reads_it() {
        let rows: &[(&[&str], bool)] = &[
            (&["gzip"], true),
            (&["GZIP"], true),
            (&[" gzip "], true),
            (&["br, gzip"], true),
            (&["gzip;q=0.5"], true),
            (&["gzip ; q=1"], true),
            (&["gzip;q=1.5"], true),
            (&["gzip;level=1"], true),
            (&["gzip;Q=0"], true),
            (&["gzip;q=0;level=1"], true),
            (&["gzip;q=abc;level=1"], false),
            (&["gzip;q=abc;q=1"], true),
            (&["gzip;q=0"], false),
            (&["gzip;q=0.0"], false),
            (&["gzip;q=abc"], false),
            (&["deflate,gzip;q=0"], false),
            (&["gzip, gzip;q=0"], false),
            (&["deflate"], false),
            (&["*"], false),
            (&["identity"], false),
            (&["x-gzip"], false),
            (&["deflate", "gzip"], false),
            (&[], false),
        ];
        for (values, want) in rows {
            assert_eq!(accepts(values), *want, "Accept-Encoding: {values:?}");
        }
    }

    #[test]
    fn gzip_round_trips() {
        for body in [&b"true"[..], b"", &[7u8; 100_000]] {
            let packed = gzip(body).expect("gzip");
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut out).expect("gunzip");
            assert_eq!(out, body);
        }
    }
}
