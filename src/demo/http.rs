//! A small HTTP client for talking to instances on 127.0.0.1.

use std::time::Duration;

use super::DemoError;

/// A pooled plain-HTTP client that never goes through a proxy.
#[derive(Clone)]
pub(crate) struct Client {
    inner: reqwest::Client,
}

/// An answer: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Client {
    pub fn new() -> Result<Client, DemoError> {
        let inner = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| DemoError::Http {
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Client { inner })
    }

    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Answer, DemoError> {
        self.send(self.inner.get(url), url, timeout).await
    }

    pub async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, DemoError> {
        let request = self
            .inner
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request, url, timeout).await
    }

    /// Sends without reading the body: the load generator's requests.
    pub async fn hit(&self, url: &str, timeout: Duration) -> Result<u16, DemoError> {
        let response = self
            .inner
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| http_error(url, &e))?;
        let status = response.status().as_u16();
        // Reading the (tiny) body returns the connection to the pool.
        let _ = response.bytes().await;
        Ok(status)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        timeout: Duration,
    ) -> Result<Answer, DemoError> {
        let response = request
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| http_error(url, &e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| http_error(url, &e))?;
        Ok(Answer { status, body })
    }
}

fn http_error(url: &str, e: &reqwest::Error) -> DemoError {
    let reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused".to_string()
    } else {
        e.to_string()
    };
    DemoError::Http {
        url: url.to_string(),
        reason,
    }
}
