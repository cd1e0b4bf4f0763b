//! Reading and writing `.npy` files for the command-line tool (feature `cli`).
