//! The one place an error becomes an HTTP answer. Each service has one
//! error enum; it says the status and the stable code, this turns it into
//! the design's body `{"error":{"code":…,"message":…}}`.

use super::Response;

/// What a service's error enum tells the HTTP layer.
pub trait HttpError: std::fmt::Display {
    fn status_code(&self) -> u16;

    /// Stable and machine-readable (`invalid_price`), unlike the message.
    fn code(&self) -> &'static str;

    /// The `Allow` header of a 405.
    fn allow(&self) -> Option<&'static str> {
        None
    }

    /// The `Location` of what the error is about, if it names something
    /// the client can look up.
    fn location(&self) -> Option<String> {
        None
    }

    /// A 5xx other than 503 logs its cause and shows the client none of
    /// it; a 503 says when to retry; a 405 says what is allowed.
    fn to_response(&self) -> Response {
        let status = self.status_code();
        if status >= 500 && status != 503 {
            tracing::error!(cause = %self, "request failed");
            return Response::error(status, self.code(), "internal error");
        }
        let response = Response::error(status, self.code(), &self.to_string());
        let response = match self.allow() {
            Some(allow) => response.with_header("Allow", allow),
            None => response,
        };
        let response = match self.location() {
            Some(location) => response.with_header("Location", location),
            None => response,
        };
        if status == 503 {
            response.with_header("Retry-After", "1")
        } else {
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Failure {
        Secret,
        Busy,
        Method,
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("password=hunter2")
        }
    }

    impl HttpError for Failure {
        fn status_code(&self) -> u16 {
            match self {
                Failure::Secret => 500,
                Failure::Busy => 503,
                Failure::Method => 405,
            }
        }
        fn code(&self) -> &'static str {
            "code"
        }
        fn allow(&self) -> Option<&'static str> {
            matches!(self, Failure::Method).then_some("GET, POST")
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let response = Failure::Secret.to_response();
        assert_eq!(response.status(), 500);
        assert!(!String::from_utf8_lossy(response.body()).contains("hunter2"));
    }

    #[test]
    fn overload_asks_to_retry_and_405_says_what_is_allowed() {
        assert_eq!(Failure::Busy.to_response().header("Retry-After"), Some("1"));
        assert_eq!(
            Failure::Method.to_response().header("Allow"),
            Some("GET, POST")
        );
    }
}
