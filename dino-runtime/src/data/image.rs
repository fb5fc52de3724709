//! 8-bit images, as PIL holds them: the augmentations work in `u8` with PIL's rounding, so
//! they produce the pixels DINO's torchvision pipeline produces.
use std::path::Path;

use crate::error::{Error, Result};

/// An 8-bit image, row-major, channels interleaved (1 = grayscale "L", 3 = "RGB").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// ITU-R 601-2 luma as PIL computes it (`convert("L")`): fixed point, rounded.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Image {
        assert_eq!(data.len(), width * height * channels, "image data size");
        Image { width, height, channels, data }
    }

    /// A constant image.
    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> Image {
        Image::new(width, height, channels, vec![value; width * height * channels])
    }

    pub fn pixel(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// `convert("L")`.
    pub fn to_luma(&self) -> Image {
        if self.channels == 1 {
            return self.clone();
        }
        let data = self.data.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect();
        Image::new(self.width, self.height, 1, data)
    }

    /// Replicate or reduce channels: L to RGB copies the value, RGB to L is `luma`.
    pub fn with_channels(&self, channels: usize) -> Image {
        match (self.channels, channels) {
            (a, b) if a == b => self.clone(),
            (3, 1) => self.to_luma(),
            (1, 3) => Image::new(self.width, self.height, 3, self.data.iter().flat_map(|&v| [v, v, v]).collect()),
            (a, b) => panic!("no conversion from {a} to {b} channels"),
        }
    }

    /// Decode a file (any format of the `image` crate) to `channels` (1 or 3).
    pub fn open(path: &Path, channels: usize) -> Result<Image> {
        let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
        let decoded = image::ImageReader::open(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot read: {e}")))?
            .decode()
            .map_err(|e| bad(format!("not a decodable image: {e}")))?;
        Ok(Image::from_dynamic(&decoded, channels))
    }

    /// From a decoded `image` crate image: alpha dropped as PIL's `convert("RGB")` does,
    /// grayscale from RGB with PIL's luma (the `image` crate's own uses other weights).
    pub fn from_dynamic(img: &image::DynamicImage, channels: usize) -> Image {
        let gray_source = matches!(
            img.color(),
            image::ColorType::L8 | image::ColorType::La8 | image::ColorType::L16 | image::ColorType::La16
        );
        if channels == 1 && gray_source {
            let g = img.to_luma8();
            return Image::new(g.width() as usize, g.height() as usize, 1, g.into_raw());
        }
        let rgb = img.to_rgb8();
        let rgb = Image::new(rgb.width() as usize, rgb.height() as usize, 3, rgb.into_raw());
        rgb.with_channels(channels)
    }

    /// Encode as PNG, written atomically.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let color = if self.channels == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
        let bytes = png_bytes(&self.data, self.width as u32, self.height as u32, color)
            .map_err(|e| Error::Format { path: path.to_path_buf(), why: format!("cannot encode PNG: {e}") })?;
        crate::files::write_atomic(path, &bytes)
    }
}

/// PNG bytes of 8-bit pixels.
pub fn png_bytes(data: &[u8], width: u32, height: u32, color: image::ExtendedColorType) -> image::ImageResult<Vec<u8>> {
    use image::ImageEncoder;
    let mut out = vec![];
    image::codecs::png::PngEncoder::new(&mut out).write_image(data, width, height, color)?;
    Ok(out)
}
