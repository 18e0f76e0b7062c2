"""Write a small deterministic synthetic segmentation dataset in MMSeg's layout.

Each image is a noisy, smoothly varying random background with a few textured shapes on
top. Shape colours are drawn from the full colour range, so colour alone does not
identify a class: a network has to learn each class's texture (and outline) to separate
it from the background and from the other classes.

Layout (the one ``configs/_base_/datasets/toy.py`` expects)::

    <out>/images/{training,validation}/<name>.png        RGB images
    <out>/annotations/{training,validation}/<name>.png   uint8 labels, 0..len(CLASSES)-1

Usage::

    python tools/make_toy_dataset.py data/toy --num-train 64 --num-val 16 --size 128
"""
import argparse
import os
import os.path as osp

import cv2
import numpy as np

# Index = label value written to the annotation PNGs.
CLASSES = ('background', 'striped disc', 'checkered square', 'dotted triangle')
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200]]


def _texture(label, size, rng):
    """A (size, size) float map in [0, 1] carrying the class's texture.

    Periods and phases vary per shape so that the texture is a pattern to recognise,
    not a fixed template to memorise.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = rng.uniform(4.0, 7.0)
    phase = rng.uniform(0, 2 * np.pi)
    if label == 1:  # stripes at a random orientation
        theta = rng.uniform(0, np.pi)
        coord = xx * np.cos(theta) + yy * np.sin(theta)
        return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * coord / period + phase))
    if label == 2:  # checkerboard
        cells = (np.floor(xx / period * 2) + np.floor(yy / period * 2)) % 2
        return cells.astype(np.float32)
    if label == 3:  # regular dots
        d = (np.sin(2 * np.pi * xx / period + phase) *
             np.sin(2 * np.pi * yy / period + phase))
        return (d > 0.5).astype(np.float32)
    raise ValueError(f'label must be a shape class 1..3, got {label}')


def _shape_mask(label, size, rng):
    """Boolean (size, size) mask of one randomly placed shape of class ``label``."""
    mask = np.zeros((size, size), np.uint8)
    radius = int(rng.uniform(0.12, 0.25) * size)
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, size=2))
    if label == 1:
        cv2.circle(mask, (cx, cy), radius, 1, thickness=-1)
    elif label == 2:
        angle = rng.uniform(0, 90)
        box = cv2.boxPoints(((cx, cy), (2 * radius, 2 * radius), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif label == 3:
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
        pts = np.stack([cx + radius * 1.2 * np.cos(angles),
                        cy + radius * 1.2 * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:
        raise ValueError(f'label must be a shape class 1..3, got {label}')
    return mask.astype(bool)


def make_sample(size, rng, max_shapes=4):
    """Return one (image, label) pair: (size, size, 3) uint8 RGB and (size, size) uint8."""
    # Background: a low-frequency random colour field plus pixel noise.
    coarse = rng.uniform(0, 255, size=(3, 3, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 12, size=image.shape).astype(np.float32)
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        cls = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(cls, size, rng)
        tex = _texture(cls, size, rng)[..., None]
        dark, light = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        # Keep the two texture colours apart so the pattern stays visible.
        light = np.where(np.abs(light - dark) < 60, (dark + 128) % 256, light)
        fill = dark + tex * (light - dark)
        fill += rng.normal(0, 8, size=fill.shape).astype(np.float32)
        image[mask] = fill[mask]
        label[mask] = cls  # later shapes occlude earlier ones, in image and label alike
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_split(out_dir, split, num, size, seed):
    img_dir = osp.join(out_dir, 'images', split)
    ann_dir = osp.join(out_dir, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num):
        image, label = make_sample(size, rng)
        name = f'{split}_{i:05d}.png'
        cv2.imwrite(osp.join(img_dir, name), image[..., ::-1])  # RGB -> BGR
        cv2.imwrite(osp.join(ann_dir, name), label)


def make_toy_dataset(out_dir, num_train=64, num_val=16, size=128, seed=0):
    """Write the dataset to ``out_dir``; the same arguments give byte-identical files."""
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'{name} must be a positive integer, got {value!r}')
    if not isinstance(size, int) or size < 16:
        raise ValueError(f'size must be an integer >= 16 (pixels), got {size!r}')
    # Distinct seeds per split: validation images are never copies of training ones.
    write_split(out_dir, 'training', num_train, size, seed)
    write_split(out_dir, 'validation', num_val, size, seed + 1_000_003)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Write a synthetic shapes-and-textures segmentation dataset')
    parser.add_argument('out_dir', nargs='?', default='data/toy',
                        help='output root (default: data/toy)')
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--size', type=int, default=128, help='image side, pixels')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def main():
    args = parse_args()
    make_toy_dataset(args.out_dir, args.num_train, args.num_val, args.size, args.seed)
    print(f'wrote {args.num_train} training and {args.num_val} validation images '
          f'of {args.size}x{args.size} to {args.out_dir}')


if __name__ == '__main__':
    main()
