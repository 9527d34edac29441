"""Produce ``extra/*.npz``: official-code outputs for input sizes and a width beyond the shared set.

NOT run by the test suite. Needs a separate virtualenv with the official code's dependencies
(jax==0.4.30 jaxlib==0.4.30 dm-haiku==0.0.12 numpy==1.26.4 optax==0.2.3) and the unmodified
official ``mmv/`` package (google-deepmind/deepmind-research) and this repository's root on PYTHONPATH
(from the repository root):

    PYTHONPATH=/path/to/deepmind-research:. /path/to/jaxvenv/bin/python \
        tests/assets/official_mmv/make_extra_reference.py OUT_DIR

Weights are the fill rule of ``tests/helpers/official_reference.py`` for the keys and shapes of
``<config>/params.json``; ``tsm_resnet_x2`` uses the width-2 shapes derived from x1 (haiku checks
every provided shape against the shape the module asks for, so a wrong derivation fails here).
"""

import sys
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import haiku as hk  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from mmv import config as official_config  # noqa: E402
from mmv.models import mm_embeddings  # noqa: E402

from tests.helpers import official_reference as ref  # noqa: E402

CKPT_NAMES = {"s3d": "mmv_s3d.pkl", "tsm_resnet_x1": "mmv_tsm_resnet_x1.pkl",
              "tsm_resnet_x2": "mmv_tsm_resnet_x2.pkl"}

# name: (config, B, video shape [T,H,W,C] as fed to the model, spectrogram [T',F], words N, seed)
CASES = {
    "s3d_b1_odd": ("s3d", 1, (3, 9, 7, 24), (37, 23), 5, 10),
    "s3d_b3_nonsquare": ("s3d", 3, (5, 10, 6, 24), (50, 40), 7, 11),
    "tsm_resnet_x1_b1_odd": ("tsm_resnet_x1", 1, (3, 33, 47, 3), (37, 23), 5, 12),
    "tsm_resnet_x1_b3_even": ("tsm_resnet_x1", 3, (2, 20, 28, 3), (64, 30), 7, 13),
    "tsm_resnet_x2_b2_odd": ("tsm_resnet_x2", 2, (4, 35, 29, 3), (96, 40), 16, 14),
}


def two_level(flat):
    out = {}
    for k, v in flat.items():
        module, leaf = k.rsplit("/", 1)
        out.setdefault(module, {})[leaf] = v
    return out


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, (config, b, vshape, ashape, n_words, seed) in CASES.items():
        cfg = official_config.get_model_config(CKPT_NAMES[config])
        if config == "tsm_resnet_x2":
            assert cfg["vision_model_kwargs"]["width_mult"] == 2
        pshapes, sshapes = ref.key_shapes(config)
        params = {k: ref.fill(k, s) for k, s in pshapes.items()}
        state = {k: ref.fill(k, s) for k, s in sshapes.items()}
        rng = np.random.default_rng(seed)
        inputs = {
            "video": rng.uniform(0, 1, (b, *vshape)).astype(np.float32),
            "audio_spectrogram": rng.standard_normal((b, *ashape, 1)).astype(np.float32),
            "word_ids": rng.integers(0, 65536, (b, n_words)).astype(np.int32),
        }

        def forward(images, audio_spectrogram, word_ids, cfg=cfg):
            module = mm_embeddings.AudioTextVideoEmbedding(
                **cfg, word_embedding_matrix=jnp.zeros((65536, 300), images.dtype))
            return module(images, audio_spectrogram, word_ids, is_training=False)

        fwd = hk.transform_with_state(forward)
        result = {f"input.{k}": v for k, v in inputs.items()}
        for dt, suffix in ((np.float32, ""), (np.float64, "__f64")):
            def cast(d, dt=dt):
                return {k: (v.astype(dt) if v.dtype.kind == "f" else v) for k, v in d.items()}

            o, _ = jax.jit(fwd.apply)(two_level(cast(params)), two_level(cast(state)), None,
                                      inputs["video"].astype(dt), inputs["audio_spectrogram"].astype(dt),
                                      inputs["word_ids"])
            flat = {"vid_repr": o["vid_repr"], "aud_repr": o["aud_repr"]}
            for group in ("vid_embd", "aud_embd", "txt_embd"):
                for k, v in o[group].items():
                    flat[f"{group}.{k}"] = v
            for k, v in flat.items():
                result[k + suffix] = np.asarray(v)
        np.savez_compressed(out / f"{name}.npz", config=np.asarray(config), **result)
        print(name, {k: v.shape for k, v in result.items() if "__f64" not in k}, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
