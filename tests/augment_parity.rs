//! DINO's augmentation pixels against PIL/torchvision (fixture `pil_ops`, written by
//! `tests/reference/make_fixtures.py`): every operation must give the same 8-bit values as
//! the Python pipeline (bit-exact: every tolerance is 0 gray levels).
mod common;

use common::{fixture, tensor};
use dino::runtime::data::{pil, Image};
use dino::runtime::tensors::TensorFile;

fn image(f: &TensorFile, name: &str) -> Image {
    let t = tensor(f, name);
    let (h, w, c) = (t.shape[0], t.shape[1], t.shape[2]);
    Image::new(w, h, c, t.data.iter().map(|&v| v as u8).collect())
}

/// Compare with the reference: no value may be off by more than `tol` gray levels.
fn check(f: &TensorFile, name: &str, got: &Image, tol: u8) {
    let want = image(f, name);
    assert_eq!((got.width, got.height, got.channels), (want.width, want.height, want.channels), "{name}: shape");
    let diffs: Vec<u8> = got.data.iter().zip(&want.data).map(|(a, b)| a.abs_diff(*b)).collect();
    let worst = diffs.iter().copied().max().unwrap_or(0);
    let off = diffs.iter().filter(|&&d| d > 0).count();
    assert!(worst <= tol, "{name}: max difference {worst} gray levels ({off} of {} values differ)", diffs.len());
}

#[test]
fn augmentation_ops_match_pil_and_torchvision() {
    let f = fixture("pil_ops");
    for name in ["rgb", "gray"] {
        let img = image(&f, name);
        let (w, h) = (img.width, img.height);
        let n = |op: &str| format!("{name}.{op}");
        check(&f, &n("resize_down"), &pil::resize_bicubic(&img, w / 2 + 1, h / 2), 0);
        check(&f, &n("resize_up"), &pil::resize_bicubic(&img, w * 2 - 3, h + 7), 0);
        check(&f, &n("resize_h_only"), &pil::resize_bicubic(&img, w, 5), 0);
        check(&f, &n("resized_crop"), &pil::resize_bicubic(&pil::crop(&img, 2, 3, 9, 11), 12, 12), 0);
        check(&f, &n("hflip"), &pil::hflip(&img), 0);
        for fac in [0.65f32, 1.3] {
            check(&f, &n(&format!("brightness_{fac}")), &pil::brightness(&img, fac), 0);
            check(&f, &n(&format!("contrast_{fac}")), &pil::contrast(&img, fac), 0);
            check(&f, &n(&format!("saturation_{fac}")), &pil::saturation(&img, fac), 0);
        }
        for fac in [-0.1f32, 0.07] {
            check(&f, &n(&format!("hue_{fac}")), &pil::hue(&img, fac), 0);
        }
        check(&f, &n("grayscale"), &pil::grayscale(&img), 0);
        check(&f, &n("solarize"), &pil::solarize(&img, 128), 0);
        for r in ["0.1", "0.7", "1.5", "2.0"] {
            check(&f, &n(&format!("blur_pil_{r}")), &pil::gaussian_blur_pil(&img, r.parse().unwrap()), 0);
        }
        for s in ["0.1", "0.5", "1.0"] {
            check(&f, &n(&format!("blur_k3_{s}")), &pil::gaussian_blur_kernel(&img, 3, s.parse().unwrap()), 0);
        }
    }
}
