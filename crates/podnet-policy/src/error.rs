//! Errors that name the field they are about.

use std::fmt;

/// One refused field: its path in the object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path, as `kubectl` prints it: `spec.ingress[0].ports[1].port`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every refused field of one object (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldErrors {
    /// What the object is (`NetworkPolicy x/deny-all`).
    pub object: String,
    /// The refused fields, in the object's order.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid: ", self.object)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl FieldErrors {
    /// `Ok` when `errors` is empty, else the errors of `object`.
    pub fn check(object: impl Into<String>, errors: Vec<FieldError>) -> Result<(), FieldErrors> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FieldErrors {
                object: object.into(),
                errors,
            })
        }
    }
}
