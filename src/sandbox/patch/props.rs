//! Property tests of the laws the patch functions keep.
