"""An unseen 28x28 set for `bench/quality.py --protocol transfer --idx-dataset`: printed letters as IDX files.

Ten lowercase letters (a-j) drawn in every text font that ships inside matplotlib (DejaVu, STIX,
Computer Modern: the same faces on any machine with this project's environment, no download), each
image one random font, size, rotation, shear, stroke weight and offset, centred in 28x28 as MNIST
is (the glyph fitted in a 20x20 box, its centre of mass in the middle). 1,000 per class = 10,000
rows in a random order, written as `t10k-images-idx3-ubyte.gz` / `t10k-labels-idx1-ubyte.gz` (what
`data=mnist` reads). Synthetic, so a check and not a benchmark: no setting of this project was chosen
on it, and its distortions were fixed before any method ran on it.

    python bench/studies/glyphs_idx.py <folder>
    python bench/quality.py --protocol transfer --datasets glyphs --idx-dataset glyphs=<folder>
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fashion_idx import write_idx

LETTERS = "abcdefghij"
# matplotlib's faces without Latin letters (symbol, size-variant and fallback fonts)
NOT_TEXT = ("cmex", "cmsy", "STIXNonUni", "STIXSiz", "LastResort", "Display")


def text_fonts() -> list[Path]:
    """The .ttf faces bundled with matplotlib that draw Latin letters, sorted by name."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(path for path in folder.glob("*.ttf") if not any(part in path.name for part in NOT_TEXT))


def draw_glyph(letter: str, font_path: Path, rng: np.random.Generator) -> np.ndarray:
    """One letter -> (28, 28) uint8, white on black: a random size, rotation (+-12 deg), shear (+-0.25),
    stroke weight (thinned or thickened by one pixel at 64 px, a third of the time each), then MNIST's
    framing (fitted in 20x20, centre of mass at the centre, +-1 px)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont
    from scipy import ndimage

    font = ImageFont.truetype(str(font_path), int(rng.integers(40, 52)))
    canvas = Image.new("L", (96, 96))
    ImageDraw.Draw(canvas).text((48, 48), letter, fill=255, font=font, anchor="mm")
    shear = rng.uniform(-0.25, 0.25)
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * 48, 0, 1, 0), Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-12, 12), Image.BILINEAR)
    stroke = rng.integers(3)
    if stroke == 1:
        canvas = canvas.filter(ImageFilter.MaxFilter(3))
    elif stroke == 2:
        canvas = canvas.filter(ImageFilter.MinFilter(3))
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{font_path.name} drew nothing for {letter!r}")
    glyph = canvas.crop(box)
    scale = 20 / max(glyph.size)
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.LANCZOS)
    image = np.zeros((28, 28), np.float32)
    top, left = (28 - glyph.height) // 2, (28 - glyph.width) // 2
    image[top:top + glyph.height, left:left + glyph.width] = np.asarray(glyph, np.float32)
    row, col = ndimage.center_of_mass(image)
    shift = (14 - row + rng.uniform(-1, 1), 14 - col + rng.uniform(-1, 1))
    image = ndimage.shift(image, shift, order=1, mode="constant")
    return np.clip(image, 0, 255).round().astype(np.uint8)


def make_glyphs(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> images (10 x per_class, 28, 28) uint8, labels (N,) uint8 in a random order, the font names used."""
    rng = np.random.default_rng(seed)
    fonts = text_fonts()
    labels = np.repeat(np.arange(len(LETTERS), dtype=np.uint8), per_class)
    rng.shuffle(labels)
    images = np.stack([draw_glyph(LETTERS[label], fonts[rng.integers(len(fonts))], rng) for label in labels])
    return images, labels, [font.stem for font in fonts]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write the two IDX files into")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, labels, fonts = make_glyphs(args.per_class, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_idx(args.out / "t10k-images-idx3-ubyte.gz", images)
    write_idx(args.out / "t10k-labels-idx1-ubyte.gz", labels)
    print(f"wrote {len(labels)} images of {len(LETTERS)} letters ({args.per_class} each) in {len(fonts)} fonts "
          f"({', '.join(fonts)}) to {args.out}")


if __name__ == "__main__":
    main()
