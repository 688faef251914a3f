//! Reading a JSON request body field by field, so each service tells a
//! malformed body (400) from a well-formed one with a bad value (422) the
//! same way.
//!
//! - not JSON, not an object, a field of the wrong type, an unknown field:
//!   [`BodyError`] with `is_malformed() == true` (400);
//! - a required field missing, an integer out of range: a value error (422).
//!
//! A service's validated types (`NewOrder::parse`, `Price::parse`) turn
//! what they refuse into an [`InputError`]: the body's error, or a rule of
//! theirs broken, with its own code.

use serde_json::{Map, Value};

use crate::error::{ApiError, HttpError};
use crate::request::Request;

/// The body of a request that may be read as JSON (`Content-Type`
/// `application/json`, or none); 415 otherwise.
pub fn body(request: &Request) -> Result<&[u8], ApiError> {
    if request.declares_json() {
        Ok(request.body())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Why input was refused: a body of the wrong shape (400) or a value that
/// breaks a rule (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
}

impl InputError {
    /// A rule broken, with the code that names it (`invalid_price`).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        InputError::Invalid {
            code,
            message: message.into(),
        }
    }

    /// Turns an integer too large for 64 bits into the rule it breaks
    /// (`code`, 422); other body errors stay as they are.
    pub fn out_of_range_as(code: &'static str) -> impl Fn(BodyError) -> InputError {
        move |error| match error {
            BodyError::OutOfRange { field } => {
                InputError::invalid(code, format!("{field} is out of range"))
            }
            other => InputError::Body(other),
        }
    }
}

impl HttpError for InputError {
    fn status_code(&self) -> u16 {
        match self {
            InputError::Body(body) if body.is_malformed() => 400,
            _ => 422,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            InputError::Invalid { code, .. } => code,
            InputError::Body(body) if body.is_malformed() => "malformed_body",
            InputError::Body(_) => "invalid_value",
        }
    }
}

/// What is wrong with a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not valid JSON: {0}")]
    NotJson(String),
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("{field} must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("unknown field {field}")]
    UnknownField { field: String },
    #[error("{field} is required")]
    Missing { field: String },
    #[error("{field} is out of range")]
    OutOfRange { field: String },
}

impl BodyError {
    /// True for the 400 kinds: the body's shape is wrong, not a value in it.
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            BodyError::NotJson(_)
                | BodyError::NotAnObject
                | BodyError::WrongType { .. }
                | BodyError::UnknownField { .. }
        )
    }

    /// The field concerned, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            BodyError::WrongType { field, .. }
            | BodyError::UnknownField { field }
            | BodyError::Missing { field }
            | BodyError::OutOfRange { field } => Some(field),
            BodyError::NotJson(_) | BodyError::NotAnObject => None,
        }
    }
}

/// A parsed JSON object body.
#[derive(Debug, Clone)]
pub struct JsonObject {
    fields: Map<String, Value>,
    /// Prefix for field names in errors (`items[2].`).
    path: String,
}

impl JsonObject {
    /// Parses `body`, which must be a JSON object with only `allowed` fields.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, BodyError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|error| BodyError::NotJson(error.to_string()))?;
        Self::from_value(value, allowed, String::new())
    }

    fn from_value(value: Value, allowed: &[&str], path: String) -> Result<Self, BodyError> {
        let Value::Object(fields) = value else {
            return Err(if path.is_empty() {
                BodyError::NotAnObject
            } else {
                BodyError::WrongType {
                    field: path.trim_end_matches('.').to_owned(),
                    expected: "an object",
                }
            });
        };
        if let Some(unknown) = fields.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(BodyError::UnknownField {
                field: format!("{path}{unknown}"),
            });
        }
        Ok(JsonObject { fields, path })
    }

    fn name(&self, field: &str) -> String {
        format!("{}{field}", self.path)
    }

    /// Whether the field is present (even as `null`).
    pub fn has(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// Whether the object has no fields at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn required_str(&self, field: &str) -> Result<String, BodyError> {
        self.optional_str(field)?.ok_or_else(|| BodyError::Missing {
            field: self.name(field),
        })
    }

    /// A string, or `None` when absent. `null` is the wrong type: no field
    /// of ours is nullable.
    pub fn optional_str(&self, field: &str) -> Result<Option<String>, BodyError> {
        match self.fields.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(BodyError::WrongType {
                field: self.name(field),
                expected: "a string",
            }),
        }
    }

    pub fn required_i64(&self, field: &str) -> Result<i64, BodyError> {
        self.optional_i64(field)?.ok_or_else(|| BodyError::Missing {
            field: self.name(field),
        })
    }

    /// An integer. A number with a fraction is the wrong type (400); an
    /// integer beyond 64 bits is out of range (422).
    pub fn optional_i64(&self, field: &str) -> Result<Option<i64>, BodyError> {
        let wrong_type = || BodyError::WrongType {
            field: self.name(field),
            expected: "an integer",
        };
        match self.fields.get(field) {
            None => Ok(None),
            Some(Value::Number(number)) => {
                if let Some(value) = number.as_i64() {
                    return Ok(Some(value));
                }
                if number.is_u64() {
                    return Err(BodyError::OutOfRange {
                        field: self.name(field),
                    });
                }
                match number.as_f64() {
                    Some(float) if float.is_finite() && float.fract() == 0.0 => {
                        Err(BodyError::OutOfRange {
                            field: self.name(field),
                        })
                    }
                    _ => Err(wrong_type()),
                }
            }
            Some(_) => Err(wrong_type()),
        }
    }

    /// An array of objects, each with only `allowed` fields.
    pub fn required_objects(
        &self,
        field: &str,
        allowed: &[&str],
    ) -> Result<Vec<JsonObject>, BodyError> {
        match self.fields.get(field) {
            None => Err(BodyError::Missing {
                field: self.name(field),
            }),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(at, item)| {
                    Self::from_value(
                        item.clone(),
                        allowed,
                        format!("{}[{at}].", self.name(field)),
                    )
                })
                .collect(),
            Some(_) => Err(BodyError::WrongType {
                field: self.name(field),
                expected: "an array",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_are_malformed_and_value_errors_are_not() {
        let parse = |body: &str| JsonObject::parse(body.as_bytes(), &["name", "price"]);
        assert!(parse("{").unwrap_err().is_malformed());
        assert_eq!(parse("[1]").unwrap_err(), BodyError::NotAnObject);
        assert!(matches!(
            parse(r#"{"colour": 1}"#).unwrap_err(),
            BodyError::UnknownField { .. }
        ));
        let object = parse(r#"{"name": 5, "price": 1.5}"#).unwrap();
        assert!(object.required_str("name").unwrap_err().is_malformed());
        assert!(object.required_i64("price").unwrap_err().is_malformed());
        let object = parse(r#"{"price": 99999999999999999999}"#).unwrap();
        let error = object.required_i64("price").unwrap_err();
        assert_eq!(
            error,
            BodyError::OutOfRange {
                field: "price".into()
            }
        );
        assert!(!error.is_malformed());
        assert!(!object.required_str("name").unwrap_err().is_malformed());
        let nulls = parse(r#"{"name": null, "price": null}"#).unwrap();
        assert!(nulls.optional_str("name").unwrap_err().is_malformed());
        assert!(nulls.optional_i64("price").unwrap_err().is_malformed());
    }

    #[test]
    fn input_errors_answer_400_for_shape_and_422_for_rules() {
        let malformed = InputError::from(BodyError::NotAnObject);
        assert_eq!(
            (malformed.status_code(), malformed.code()),
            (400, "malformed_body")
        );
        let missing = InputError::from(BodyError::Missing {
            field: "name".into(),
        });
        assert_eq!(
            (missing.status_code(), missing.code()),
            (422, "invalid_value")
        );
        let rule = InputError::out_of_range_as("invalid_price")(BodyError::OutOfRange {
            field: "price".into(),
        });
        assert_eq!((rule.status_code(), rule.code()), (422, "invalid_price"));
        assert_eq!(rule.to_string(), "price is out of range");
    }

    #[test]
    fn nested_objects_name_their_path() {
        let object =
            JsonObject::parse(br#"{"items": [{"q": 1}, {"q": "x"}]}"#, &["items"]).unwrap();
        let items = object.required_objects("items", &["q"]).unwrap();
        assert_eq!(items[0].required_i64("q").unwrap(), 1);
        let error = items[1].required_i64("q").unwrap_err();
        assert_eq!(error.field(), Some("items[1].q"));
        let bad = JsonObject::parse(br#"{"items": [{"z": 1}]}"#, &["items"]).unwrap();
        assert_eq!(
            bad.required_objects("items", &["q"]).unwrap_err().field(),
            Some("items[0].z")
        );
    }
}
