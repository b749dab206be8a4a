//! Taking a `std::sync` lock whether or not it is poisoned. Not a public API: shared by the
//! micro crates so each lock site is one call, not an inline recovery.
//!
//! A lock is poisoned when a thread panicked while holding it. micro's locks guard state
//! that every step leaves whole (a map insert, a counter, a swapped `Arc`), so a panic
//! elsewhere must not turn every later caller into a second panic: they take the guard and
//! go on.

#![doc(hidden)]

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `lock`, poisoned or not.
pub fn read<T: ?Sized>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `lock`, poisoned or not.
pub fn write<T: ?Sized>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// The value of `mutex` through a unique borrow (no locking), poisoned or not.
pub fn get_mut<T: ?Sized>(mutex: &mut Mutex<T>) -> &mut T {
    mutex.get_mut().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex, RwLock};

    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let mutex = Arc::new(Mutex::new(1));
        let rwlock = Arc::new(RwLock::new(2));
        let (m, r) = (Arc::clone(&mutex), Arc::clone(&rwlock));
        let panicked = std::thread::spawn(move || {
            let _m = m.lock();
            let _r = r.write();
            panic!("poisons both locks");
        })
        .join();
        assert!(panicked.is_err());
        assert!(mutex.is_poisoned() && rwlock.is_poisoned());
        *lock(&mutex) += 1;
        *write(&rwlock) += 1;
        assert_eq!((*lock(&mutex), *read(&rwlock)), (2, 3));
        let mut mutex = mutex;
        let unique = Arc::get_mut(&mut mutex);
        assert!(unique.is_some(), "the panicked thread's clone is gone");
        if let Some(unique) = unique {
            *get_mut(unique) += 1;
        }
        assert_eq!(*lock(&mutex), 3);
    }
}
