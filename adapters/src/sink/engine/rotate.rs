//! The credential of a registration: kept while valid (re-verified about once per renewal
//! window), adopted from what an earlier process published (so restarts and leader changes
//! mint nothing), or minted — first time, renewal, changed settings, or a token the member no
//! longer accepts.
//!
//! Adoption trusts the record's times (our own annotation on our own Secret) and checks the
//! published token once with a SelfSubjectReview: a read on the member, never a write, and the
//! only way to notice a token revoked behind our back.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::{
    Engine, Failure, Key, ProfileState, Registration, client_from_kubeconfig, member_client,
};
use crate::access::AccessRequest;
use crate::kubeconfig::{self, Endpoint};
use crate::member::{self, MemberError, MintedIdentity};
use crate::sink::record::{self, Record, RecordedEndpoint};
use crate::sink::{MintedCredential, Sink};

/// How a registration's credential came about in this pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fresh {
    /// Kept from memory.
    Cached,
    /// Taken over from the published Secret (restart, new leader).
    Adopted,
    /// Minted now; `rotation` when it replaces an earlier one.
    Minted { rotation: bool },
}

/// What the published Secrets say about a profile.
enum Published {
    /// A registration to keep using.
    Adoptable(Box<Registration>),
    /// A registration that must be replaced (its record names what to retire, if different).
    Stale(Box<Record>),
    /// Nothing published.
    Nothing,
}

impl<S: Sink> Engine<S> {
    /// The credential to publish for the profile, and the record it replaces (if any).
    pub(super) async fn credential(
        &self,
        key: &Key,
        uid: &str,
        request: &AccessRequest,
        advertised: &Endpoint,
    ) -> Result<(Registration, Fresh, Option<Record>), Failure> {
        let ttl = self.options.token_ttl.as_secs();
        let fingerprint = record::fingerprint(request, &self.options.identity, ttl);
        let now = Timestamp::now();
        let current = self
            .with_state(key, |s| {
                if s.uid != uid {
                    *s = ProfileState {
                        uid: uid.to_string(),
                        ..ProfileState::default()
                    };
                }
                s.registration.clone()
            })
            .flatten();
        let mut previous = current.as_ref().map(|r| r.record.clone());
        match current {
            Some(registration)
                if registration.record.fingerprint == fingerprint
                    && now < registration.renew_at =>
            {
                if now < registration.next_verify {
                    return Ok((registration, Fresh::Cached, None));
                }
                match self.verify_published(&registration).await {
                    Ok(()) => {
                        let checked = Registration {
                            next_verify: midpoint(now, registration.renew_at),
                            ..registration
                        };
                        return Ok((checked, Fresh::Cached, None));
                    }
                    // Unreachable: keep publishing what we have; the member may come back.
                    Err(MemberError::Unreachable(message)) => {
                        warn!(profile = %format!("{}/{}", key.0, key.1), %message, "cannot re-verify the published token; keeping it");
                        return Ok((registration, Fresh::Cached, None));
                    }
                    Err(err) => {
                        warn!(profile = %format!("{}/{}", key.0, key.1), error = %err, "the published token no longer works; minting a new one");
                    }
                }
            }
            Some(_) => {}
            None => match self.published(key, uid, &fingerprint, now).await? {
                Published::Adoptable(registration) => {
                    info!(profile = %format!("{}/{}", key.0, key.1), renew_at = %registration.renew_at, "adopted the published registration");
                    return Ok((*registration, Fresh::Adopted, None));
                }
                Published::Stale(record) => previous = Some(*record),
                Published::Nothing => {}
            },
        }
        let rotation = previous.is_some();
        match self.mint(uid, request, advertised, fingerprint).await {
            Ok(registration) => {
                self.sink_metrics.count_mint(rotation, Ok(()));
                info!(
                    profile = %format!("{}/{}", key.0, key.1),
                    rotation,
                    expires_at = %registration.record.expires_at,
                    renew_at = %registration.renew_at,
                    "minted a member token"
                );
                Ok((registration, Fresh::Minted { rotation }, previous))
            }
            Err(failure) => {
                self.sink_metrics
                    .count_mint(rotation, Err(super::static_category(failure.category)));
                Err(failure)
            }
        }
    }

    /// What our published Secrets hold for this profile.
    async fn published(
        &self,
        key: &Key,
        uid: &str,
        fingerprint: &str,
        now: Timestamp,
    ) -> Result<Published, Failure> {
        let Some((secret, record)) = self
            .published_records(&key.0, uid)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(Published::Nothing);
        };
        let (Some(expires), Some(renew)) = (record.expires(), record.renew()) else {
            return Ok(Published::Stale(Box::new(record)));
        };
        if record.fingerprint != fingerprint || now >= renew || now >= expires {
            return Ok(Published::Stale(Box::new(record)));
        }
        let Some(token) = self.sink.published_token(&secret) else {
            return Ok(Published::Stale(Box::new(record)));
        };
        let credential = credential_of(
            &record,
            &record.endpoint.endpoint(),
            token,
            expires,
            &self.options.identity.namespace,
            S::kubeconfig_names(),
        );
        let registration = Registration {
            credential,
            record: record.clone(),
            renew_at: renew,
            next_verify: midpoint(now, renew),
        };
        match self.verify_published(&registration).await {
            Ok(()) => Ok(Published::Adoptable(Box::new(registration))),
            // Trust the record while the member is away; it is checked again later.
            Err(MemberError::Unreachable(_)) => Ok(Published::Adoptable(Box::new(Registration {
                next_verify: now,
                ..registration
            }))),
            Err(_) => Ok(Published::Stale(Box::new(record))),
        }
    }

    /// Check with a SelfSubjectReview that the published token still is the recorded identity.
    async fn verify_published(&self, registration: &Registration) -> Result<(), MemberError> {
        let client = client_from_kubeconfig(
            &registration.credential.kubeconfig,
            self.options.member_timeout,
        )
        .await
        .map_err(MemberError::Verify)?;
        let identity = &registration.record.identity;
        member::verify(
            &client,
            &format!(
                "system:serviceaccount:{}:{}",
                identity.namespace, identity.service_account
            ),
        )
        .await
        .map(drop)
    }

    /// Resolve bootstrap access (every trust rule), make sure the member identity exists as
    /// configured (never taking over what is not ours), request and verify a token.
    async fn mint(
        &self,
        uid: &str,
        request: &AccessRequest,
        advertised: &Endpoint,
        fingerprint: String,
    ) -> Result<Registration, Failure> {
        let access = self
            .resolver()
            .resolve(request, advertised)
            .await
            .map_err(|err| Failure::new(err.category(), err.to_string()))?;
        let client = member_client(
            &access.endpoint,
            &access.credential,
            self.options.member_timeout,
        )
        .await?;
        let identity = &self.options.identity;
        let member_failure = |err: MemberError| Failure::new(err.category(), err.to_string());
        // The identity is checked once per member and period, not per profile; a token request
        // that fails on a remembered identity checks it again before giving up (it may have been
        // deleted on the member meanwhile).
        let member = member_key(&access.endpoint);
        let (mut account_uid, remembered) = self
            .ensured
            .ensure(&member, &client, identity, S::NAME)
            .await
            .map_err(member_failure)?;
        let token = match member::request_token(&client, identity, self.options.token_ttl).await {
            Ok(token) => token,
            Err(_) if remembered => {
                self.ensured.forget(&member);
                account_uid = self
                    .ensured
                    .ensure(&member, &client, identity, S::NAME)
                    .await
                    .map_err(member_failure)?
                    .0;
                member::request_token(&client, identity, self.options.token_ttl)
                    .await
                    .map_err(member_failure)?
            }
            Err(err) => {
                self.ensured.forget(&member);
                return Err(member_failure(err));
            }
        };
        let renew_at = self.options.renewal.renew_at(
            token.issued_at,
            token.expires_at,
            &format!("{uid}/{}", self.options.instance),
        );
        // Verify the very kubeconfig we are about to publish, not a client built another way;
        // the uid the member names is the account the token is really bound to (a remembered
        // uid may predate someone recreating the account).
        let published = kubeconfig::minted_kubeconfig(
            &access.endpoint,
            &token.token,
            &S::kubeconfig_names(),
            &identity.namespace,
        );
        let verifier = client_from_kubeconfig(&published, self.options.member_timeout)
            .await
            .map_err(|message| Failure::new("verify-failed", message))?;
        let verified_uid = member::verify(&verifier, &identity.username())
            .await
            .map_err(member_failure)?;
        if !verified_uid.is_empty() && verified_uid != account_uid {
            self.ensured.confirm(&member, &verified_uid).await;
            account_uid = verified_uid;
        }
        let record = Record {
            profile_uid: uid.to_string(),
            access: request.clone(),
            endpoint: RecordedEndpoint::from(&access.endpoint),
            identity: MintedIdentity {
                instance: identity.instance.clone(),
                namespace: identity.namespace.clone(),
                service_account: identity.service_account.clone(),
                service_account_uid: account_uid,
                cluster_role: identity.cluster_role.clone(),
                cluster_role_binding: identity.cluster_role_binding.clone(),
                namespaces: identity.namespaces.clone(),
            },
            fingerprint,
            expires_at: token.expires_at.to_string(),
            renew_after: renew_at.to_string(),
        };
        let credential = credential_of(
            &record,
            &access.endpoint,
            token.token,
            token.expires_at,
            &identity.namespace,
            S::kubeconfig_names(),
        );
        Ok(Registration {
            credential,
            record,
            renew_at,
            next_verify: midpoint(Timestamp::now(), renew_at),
        })
    }
}

/// The credential handed to `render`, always built the same way from the same inputs, so an
/// adopted registration renders exactly what was published.
fn credential_of(
    record: &Record,
    endpoint: &Endpoint,
    token: crate::sensitive::Sensitive,
    expires_at: Timestamp,
    namespace: &str,
    names: kubeconfig::KubeconfigNames,
) -> MintedCredential {
    let kubeconfig = kubeconfig::minted_kubeconfig(endpoint, &token, &names, namespace);
    MintedCredential {
        kubeconfig,
        token,
        server: endpoint.server.clone(),
        ca_pem: endpoint.ca_pem.clone(),
        tls_server_name: endpoint.tls_server_name.clone(),
        insecure_skip_tls_verify: endpoint.insecure_skip_tls_verify,
        proxy_url: endpoint.proxy_url.clone(),
        expires_at,
        namespace: record.identity.namespace.clone(),
        service_account: record.identity.service_account.clone(),
    }
}

/// A stable key of a member endpoint, for [`crate::member::ensured::EnsuredIdentities`].
fn member_key(endpoint: &Endpoint) -> String {
    format!(
        "{}|{}|{}",
        endpoint.server,
        endpoint.tls_server_name.as_deref().unwrap_or_default(),
        endpoint.proxy_url.as_deref().unwrap_or_default()
    )
}

/// Halfway from `from` to `to` (at least a minute ahead): the published token is re-verified
/// about once per renewal window.
fn midpoint(from: Timestamp, to: Timestamp) -> Timestamp {
    let half = to.duration_since(from) / 2;
    let half = half.max(SignedDuration::from_secs(60));
    from.checked_add(half).unwrap_or(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_happens_halfway_to_renewal_and_never_in_a_hot_loop() {
        let from = Timestamp::from_second(1_000).unwrap();
        let to = Timestamp::from_second(1_000 + 3600).unwrap();
        assert_eq!(
            midpoint(from, to),
            Timestamp::from_second(1_000 + 1800).unwrap()
        );
        let soon = Timestamp::from_second(1_010).unwrap();
        assert_eq!(midpoint(from, soon), Timestamp::from_second(1_060).unwrap());
    }
}
