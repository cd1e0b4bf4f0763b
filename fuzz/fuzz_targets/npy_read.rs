//! Any bytes through the `.npy` reader: an `Array` or an error, never a panic, and never an
//! allocation beyond the input's size (libFuzzer's `-rss_limit_mb` / `-malloc_limit_mb` catch one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpool::npy;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = npy::read_array(data) {
        // A decoded array holds exactly product(shape) elements, which the input held.
        let numel = array.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        assert_eq!(numel, Some(array.data.len()));
        let header = npy::parse_header(data).expect("a file that decodes has a valid header");
        assert_eq!(header.shape, array.shape);
        assert_eq!(header.data_offset + header.data_len, data.len());
        // Both typed views agree with the array: exactly one of them applies.
        let values = npy::read_values(data);
        let indices = npy::read_indices(data);
        if let Ok((shape, v)) = &values {
            assert_eq!(shape, &array.shape);
            assert_eq!(v.len(), array.data.len());
        }
        if let Ok((shape, i)) = &indices {
            assert_eq!(shape, &array.shape);
            assert_eq!(i.len(), array.data.len());
        }
    } else {
        let _ = npy::parse_header(data);
        assert!(npy::read_values(data).is_err());
    }
});
