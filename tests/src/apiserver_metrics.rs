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
