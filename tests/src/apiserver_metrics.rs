//! Requests counted by the apiserver itself (`apiserver_request_total`), so "no writes in steady
//! state" is measured where it matters rather than by trusting client-side counters.

use crate::Result;

/// Verbs that write, as `apiserver_request_total` spells them: the apiserver labels requests by
/// HTTP method (`POST` = create, `PUT` = update, `PATCH`, `DELETE` — also for a collection
/// delete), `APPLY` for server-side apply; there is no `CREATE` or `UPDATE` verb in this metric
/// (proved by `tests/tests/harness.rs`). `DELETECOLLECTION` is kept in case a release labels it.
pub const WRITE_VERBS: &[&str] = &[
    "APPLY",
    "PATCH",
    "PUT",
    "POST",
    "DELETE",
    "DELETECOLLECTION",
];

/// Requests with one of `verbs` on `resource` (plural, e.g. `clusterprofiles`) served so far.
pub async fn request_count(client: &kube::Client, verbs: &[&str], resource: &str) -> Result<u64> {
    request_count_with_code(client, verbs, resource, None).await
}

/// As [`request_count`], only requests answered with HTTP status `code` (e.g. 403) when given.
pub async fn request_count_with_code(
    client: &kube::Client,
    verbs: &[&str],
    resource: &str,
    code: Option<u16>,
) -> Result<u64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let resource_label = format!("resource=\"{resource}\"");
    let total: f64 = text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter(|line| line.contains(&resource_label))
        .filter(|line| {
            verbs
                .iter()
                .any(|verb| line.contains(&format!("verb=\"{verb}\"")))
        })
        .filter(|line| code.is_none_or(|code| line.contains(&format!("code=\"{code}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok(total as u64)
}

/// One kind of request as `apiserver_request_total` labels it: verb and resource (with its
/// subresource, e.g. `serviceaccounts/token`).
pub type RequestKind = (String, String);

/// Every resource request served so far, summed over codes, scopes and versions, by
/// [`RequestKind`]. Non-resource requests (`/metrics`, `/readyz`) are left out.
pub async fn request_breakdown(
    client: &kube::Client,
) -> Result<std::collections::BTreeMap<RequestKind, u64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut totals = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        // `resource` is also the tail of `subresource`: match whole label names only.
        let label = |name: &str| -> String {
            labels
                .split(['{', ','])
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
                .and_then(|rest| rest.split_once('"'))
                .map(|(value, _)| value.to_string())
                .unwrap_or_default()
        };
        let resource = label("resource");
        if resource.is_empty() {
            continue;
        }
        let subresource = label("subresource");
        let resource = if subresource.is_empty() {
            resource
        } else {
            format!("{resource}/{subresource}")
        };
        *totals.entry((label("verb"), resource)).or_insert(0) += value as u64;
    }
    Ok(totals)
}

/// Requests in `after` not yet in `before` (kinds that did not grow are left out).
pub fn breakdown_delta(
    before: &std::collections::BTreeMap<RequestKind, u64>,
    after: &std::collections::BTreeMap<RequestKind, u64>,
) -> std::collections::BTreeMap<RequestKind, u64> {
    after
        .iter()
        .filter_map(|(kind, count)| {
            let grown = count.saturating_sub(before.get(kind).copied().unwrap_or(0));
            (grown > 0).then(|| (kind.clone(), grown))
        })
        .collect()
}
