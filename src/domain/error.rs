//! Validation errors: one entry per bad field, so a client can fix a request in one go.

/// One invalid field; `field` is the JSON field name (or `Idempotency-Key` for the header).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The JSON field (`attachments[2]`, `metadata.tags[0]` for nested ones) or the header.
    #[schema(example = "to")]
    pub field: String,
    /// What is wrong with it.
    #[schema(
        example = "must be an E.164 phone number: + followed by 8 to 15 digits, the first not 0"
    )]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// All the field errors of one request (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {0:?}")]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![FieldError::new(field, message)])
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

/// Accumulates field errors while a request is parsed, instead of stopping at the first.
#[derive(Debug, Default)]
pub(crate) struct Collector(Vec<FieldError>);

impl Collector {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub(crate) fn extend(&mut self, errors: Vec<FieldError>) {
        self.0.extend(errors);
    }

    /// Keeps the value, or records the error under `field`.
    pub(crate) fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(field, message)).ok()
    }

    /// A missing required field is recorded as "is required".
    pub(crate) fn required<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.push(field, "is required");
        }
        value
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }

    /// The errors, for a path that failed; a generic entry guards against an empty list.
    pub(crate) fn into_errors(mut self) -> ValidationErrors {
        if self.0.is_empty() {
            self.push("request", "is invalid");
        }
        ValidationErrors(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_keeps_every_error() {
        let mut c = Collector::default();
        assert_eq!(c.required::<u8>("from", None), None);
        assert_eq!(c.check::<u8>("to", Err("bad".into())), None);
        assert_eq!(c.check("body", Ok(1)), Some(1));
        let errs = c.into_result().unwrap_err();
        assert_eq!(
            errs.0,
            vec![
                FieldError::new("from", "is required"),
                FieldError::new("to", "bad")
            ]
        );
    }

    #[test]
    fn empty_collector_is_ok_and_never_an_empty_error() {
        assert!(Collector::default().into_result().is_ok());
        assert_eq!(Collector::default().into_errors().0.len(), 1);
    }
}
