//! A lazily initialized value; waiters block instead of spinning.

/// A lazily initialized value
pub struct Lazy<T, F> {
    cell: std::sync::OnceLock<T>,
    init: F,
}

impl<T, F> Lazy<T, F> {
    /// Create a new Lazy
    pub const fn new(init: F) -> Self
    where
        F: Sized,
    {
        Self { cell: std::sync::OnceLock::new(), init }
    }
}

impl<T, F> std::ops::Deref for Lazy<T, F>
where
    F: Fn() -> T,
{
    type Target = T;

    fn deref(&self) -> &T {
        self.cell.get_or_init(&self.init)
    }
}
