//! Olshausen & Field on natural images (REFERENCE E10): sparse codes of whitened photograph
//! patches learn localised, oriented, band-pass atoms. Compared here: dictionary learning, a
//! TopK SAE and a ReLU SAE, complete and overcomplete, each atom judged by a fitted Gabor.

pub mod gabor;
