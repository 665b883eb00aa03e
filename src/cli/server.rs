//! The running server's HTTP API, for CLI commands that act through it (`status`,
//! `dlq replay`): the server owns the queue.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// An answer that was not a success: its status and the problem's detail.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub detail: String,
    /// What to do about a 401 or 403: which key to set, and where.
    pub hint: Option<&'static str>,
}

#[derive(Debug)]
pub enum CallError {
    Unreachable(String),
    Refused(Refused),
    Unreadable(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "cannot reach the server: {e}"),
            CallError::Refused(r) => {
                write!(f, "server answered {}: {}", r.status, r.detail)?;
                match r.hint {
                    Some(hint) => write!(f, "; {hint}"),
                    None => Ok(()),
                }
            }
            CallError::Unreadable(e) => write!(f, "unreadable answer: {e}"),
        }
    }
}

pub struct Server {
    pub base: String,
    key: Option<String>,
    client: awc::Client,
}

impl Server {
    pub fn new(base: String, key: Option<String>) -> Self {
        Server {
            base: base.trim_end_matches('/').to_string(),
            key,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(self.client.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(self.client.post(self.url(path))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<T: DeserializeOwned>(&self, request: awc::ClientRequest) -> Result<T, CallError> {
        let request = match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let mut response = request
            .send()
            .await
            .map_err(|e| CallError::Unreachable(format!("{} ({e})", self.base)))?;
        let body = response
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .map_err(|e| CallError::Unreadable(e.to_string()))?;
        if !response.status().is_success() {
            let detail = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|p| p["detail"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            let status = response.status().as_u16();
            let hint = match (status, &self.key) {
                (401, None) => Some(
                    "this command needs an admin API key: set MESSAGING_API_KEY (or pass --api-key)",
                ),
                (401, Some(_)) => Some(
                    "the server does not know the API key in MESSAGING_API_KEY (or --api-key): \
                     is it this server's, and not revoked?",
                ),
                (403, _) => Some(
                    "this command needs a key with the admin scope in MESSAGING_API_KEY (or --api-key)",
                ),
                _ => None,
            };
            return Err(CallError::Refused(Refused {
                status,
                detail,
                hint,
            }));
        }
        serde_json::from_slice(&body).map_err(|e| CallError::Unreadable(e.to_string()))
    }
}
