//! Requests counted by the apiserver itself (`apiserver_request_total`), so "no writes in steady
//! state" is measured where it matters rather than by trusting client-side counters.

use crate::Result;

/// Verbs that write.
pub const WRITE_VERBS: &[&str] = &["APPLY", "PATCH", "UPDATE", "CREATE", "DELETE"];

/// Requests with one of `verbs` on `resource` (plural, e.g. `clusterprofiles`) served so far.
pub async fn request_count(client: &kube::Client, verbs: &[&str], resource: &str) -> Result<u64> {
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
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok(total as u64)
}
