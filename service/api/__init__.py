"""HTTP only: request parsing, auth, and response shapes. Logic lives one layer down."""
