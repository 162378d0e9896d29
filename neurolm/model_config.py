"""Model configs (pydantic): sizes and options of every NeuroLM model, with named presets.

They live in the config layer (below :mod:`neurolm.models`) so that the job configs of :mod:`neurolm.config`
can hold them as typed fields and a bad model key fails config validation on the driver, before any Ray work.
Defaults are the official models (docs/reference.md §2.1, §3.1); the documented defects of the official code
are options that default to the official behaviour.

Every config validates on construction and on assignment, rejects unknown keys, and round-trips through
``to_dict``/``from_dict`` (the ``config`` of an export's ``config.json``)::

    cfg = NeuroLMConfig.preset("base", gpt={"n_layer": 2}, causal_encoder_inputs=True)
    NeuroLMConfig.from_dict(cfg.to_dict()) == cfg

:func:`overrides_model` derives, from a config class, the model of its *overrides*: the same keys, all
optional (nested configs too), unknown keys rejected; the job configs use it for ``model.overrides``.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    model_serializer,
)

from neurolm.vocab import GPT2_TEXT_VOCAB, PADDED_TEXT_VOCAB

__all__ = [
    "ModelConfig",
    "GPTConfig",
    "EEGTransformerConfig",
    "TokenizerConfig",
    "NeuroLMConfig",
    "ConfigOverrides",
    "overrides_model",
    "GPTConfigOverrides",
    "EEGTransformerConfigOverrides",
    "TokenizerConfigOverrides",
    "NeuroLMConfigOverrides",
    "deep_merge",
]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update``, recursing into keys that are dicts in both (neither is modified)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class ModelConfig(BaseModel):
    """Base of the model configs: unknown keys are errors, assignments are validated; named presets."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    """Preset name -> field values over the defaults (nested configs as dicts)."""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Self:
        """The preset ``name`` with field ``overrides`` (nested configs as dicts, merged into the preset's)."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls._label()} preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls.from_dict(deep_merge(cls.PRESETS[name], overrides))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (nested configs as dicts)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Validate ``d`` (e.g. an export's ``config.json`` ``config``); one line per bad key."""
        try:
            return cls.model_validate(d)
        except ValidationError as err:
            unknown = [".".join(map(str, e["loc"])) for e in err.errors() if e["type"] == "extra_forbidden"]
            if unknown:
                raise ValueError(
                    f"unknown {cls.__name__} fields {unknown}; known: {sorted(cls.model_fields)}"
                ) from None
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}" for e in err.errors()
            )
            raise ValueError(f"invalid {cls.__name__}: {problems}") from None

    @classmethod
    def _label(cls) -> str:
        return {"GPT": "GPT", "NeuroLM": "NeuroLM"}.get(
            name := cls.__name__.removesuffix("Config"), name.lower()
        )


class GPTConfig(ModelConfig):
    """GPT-2 backbone sizes (official ``GPTConfig`` after ``enlarge_wte``/``enlarge_lm_head``)."""

    n_layer: int = Field(default=12, ge=1)
    n_head: int = Field(default=12, ge=1)
    n_embd: int = Field(default=768, ge=1)
    block_size: int = Field(
        default=1024,
        ge=1,
        description="Rows of the position table ``wpe``; EEG tokens use row = second index, text follows.",
    )
    vocab_size: int = Field(
        default=PADDED_TEXT_VOCAB,
        ge=1,
        description="Text rows of ``wte`` (official ``model_args.vocab_size``).",
    )
    num_codes: int = Field(default=8192, ge=1, description="EEG codes appended to the output head.")
    bias: bool = True
    dropout: float = Field(default=0.0, ge=0, lt=1)

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
        "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
        "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
        "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
        "tiny": dict(n_layer=2, n_head=4, n_embd=128, num_codes=512),
        "debug": dict(n_layer=2, n_head=2, n_embd=16, num_codes=64),
    }


class EEGTransformerConfig(ModelConfig):
    """Sizes of one EEG transformer (official ``NTConfig``)."""

    n_layer: int = Field(default=12, ge=1, description="Transformer blocks (encoder 12, decoders 4).")
    n_head: int = Field(default=12, ge=1, description="Attention heads.")
    n_embd: int = Field(
        default=768,
        ge=1,
        description="Width. The official temporal convolution hard-codes 768; here it follows this.",
    )
    in_dim: int | None = Field(
        default=None,
        description="None: raw patches through the temporal convolution (encoder). An int: "
        "``Linear(in_dim, n_embd)`` (decoders).",
    )
    patch_size: int = Field(default=200, ge=1, description="Samples per patch (1 s at 200 Hz).")
    conv_channels: int = Field(
        default=16, ge=1, description="Channels of the temporal convolution (``out_chans``)."
    )
    channel_rows: int = Field(
        default=256, ge=1, description="Rows of the channel embedding; the 10-20 vocabulary uses 139 of them."
    )
    time_rows: int = Field(
        default=64,
        ge=1,
        description="Rows of the time embedding = longest sample in seconds. Official 64 (docs/reference.md "
        "§6.3-7); raise it for longer samples (rows beyond an imported table start untrained).",
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout in blocks and after the embeddings.")
    embedding_init_std: float | None = Field(
        default=None,
        gt=0,
        description="Initial std of the channel and time embeddings; None = official N(0, 1). See TokenizerConfig.",
    )
    patch_norm: Literal["sample", "dataset"] = Field(
        default="sample",
        description="GroupNorm statistics of the temporal convolution: 'sample' (official: each sample's own) or "
        "'dataset' (measured on the training data, then fixed). See TokenizerConfig.",
    )


class TokenizerConfig(ModelConfig):
    """Sizes and options of the neural tokenizer. Defaults = the official model (147.0 M parameters)."""

    encoder_layers: int = Field(default=12, ge=1)
    encoder_heads: int = Field(default=12, ge=1)
    width: int = Field(
        default=768,
        ge=1,
        description="Encoder width; also the domain classifier's input and the text-embedding width (GPT-2: 768).",
    )
    decoder_layers: int = Field(default=4, ge=1)
    decoder_heads: int = Field(default=12, ge=1)
    decoder_width: int = Field(default=768, ge=1)
    num_codes: int = Field(default=8192, ge=1)
    code_dim: int = Field(default=128, ge=1)
    ema_decay: float = Field(default=0.99, ge=0, le=1)
    commitment_weight: float = Field(default=1.0, ge=0)
    kmeans_init: bool = True
    kmeans_iters: int = Field(default=10, ge=0)
    patch_size: int = Field(default=200, ge=1)
    freq_bins: int = Field(
        default=100,
        ge=1,
        description="Fourier-amplitude bins predicted (the first half of the 200-point FFT).",
    )
    conv_channels: int = Field(default=16, ge=1)
    domain_hidden: int = Field(default=256, ge=1)
    text_vocab_size: int = Field(
        default=GPT2_TEXT_VOCAB,
        ge=1,
        description="Rows of the frozen text-embedding table used by the domain classifier (GPT-2's vocabulary).",
    )
    channel_rows: int = Field(default=256, ge=1)
    max_seconds: int = Field(
        default=64,
        ge=1,
        description="Rows of the time embeddings (encoder and decoders). Official 64: longer samples crash "
        "(docs/reference.md §6.3-7).",
    )
    dropout: float = Field(default=0.0, ge=0, lt=1)
    embedding_init_std: float | None = Field(
        default=None,
        gt=0,
        description="Initial std of the channel and time embeddings of the encoder and decoders. None = official "
        "N(0, 1): each token starts as ~sqrt(width) of embedding against a patch embedding ~50x smaller, so a "
        "briefly trained tokenizer's features differ between samples by ~3 % of their norm and a GPT cannot tell "
        "trials apart (docs/recipe.md, issue 16). 0.02 (LaBraM's init of its position/time embeddings) keeps "
        "the signal in the features from the first step.",
    )
    patch_norm: Literal["sample", "dataset"] = Field(
        default="sample",
        description="Statistics of the encoder's temporal-convolution GroupNorms. 'sample' (official): each sample's "
        "own, so every trial is divided by its own amplitude. 'dataset': the pooled statistics of the real "
        "patches the encoder saw while training (buffers, then fixed; the frozen encoder of stages 2-3 reads "
        "them): a trial keeps its amplitude relative to the data, which is what sets Blink's long/short threshold "
        "across recording sessions (docs/recipe.md §19).",
    )
    exclude_padding: bool = Field(
        default=False,
        description="Fix for docs/reference.md §6.3-6: padding tokens are left out of k-means, the EMA codebook "
        "statistics, the commitment loss, the reconstruction-loss denominators and the patch embedding's "
        "GroupNorm statistics. Official (False): they are included, diluting the losses, pulling codes toward "
        "the zero patch, and making every token's features depend on how much padding the sample got.",
    )
    usage_ema_in_eval: bool = Field(
        default=True,
        description="Official quirk (docs/reference.md §6.3-9): the code-usage EMA also moves in eval mode. "
        "It affects no output.",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "base": {},
        "tiny": dict(
            encoder_layers=2,
            encoder_heads=4,
            width=128,
            decoder_layers=1,
            decoder_heads=4,
            decoder_width=128,
            num_codes=512,
            code_dim=32,
            domain_hidden=64,
        ),
        "debug": dict(
            encoder_layers=2,
            encoder_heads=2,
            width=16,
            decoder_layers=1,
            decoder_heads=2,
            decoder_width=16,
            num_codes=64,
            code_dim=8,
            domain_hidden=16,
            kmeans_iters=2,
        ),
    }

    def encoder_config(self) -> EEGTransformerConfig:
        return EEGTransformerConfig(
            n_layer=self.encoder_layers,
            n_head=self.encoder_heads,
            n_embd=self.width,
            in_dim=None,
            patch_size=self.patch_size,
            conv_channels=self.conv_channels,
            channel_rows=self.channel_rows,
            time_rows=self.max_seconds,
            dropout=self.dropout,
            embedding_init_std=self.embedding_init_std,
            patch_norm=self.patch_norm,
        )

    def decoder_config(self) -> EEGTransformerConfig:
        return EEGTransformerConfig(
            n_layer=self.decoder_layers,
            n_head=self.decoder_heads,
            n_embd=self.decoder_width,
            in_dim=self.code_dim,
            patch_size=self.patch_size,
            channel_rows=self.channel_rows,
            time_rows=self.max_seconds,
            dropout=self.dropout,
            embedding_init_std=self.embedding_init_std,
        )


_OFFICIAL_ENCODER: dict[str, Any] = dict(n_layer=12, n_head=12, n_embd=768)


class NeuroLMConfig(ModelConfig):
    """NeuroLM sizes and options. Presets ``base``/``large``/``xl`` = NeuroLM-B/L/XL (gpt2 / gpt2-medium /
    gpt2-xl with the official encoder), ``tiny`` (fast CPU runs), ``debug`` (unit tests)."""

    gpt: GPTConfig = Field(default_factory=GPTConfig)
    encoder: EEGTransformerConfig = Field(
        default_factory=EEGTransformerConfig,
        description="The frozen tokenizer encoder (official: 12 layers, 12 heads, width 768).",
    )
    code_head: bool = Field(
        default=False,
        description="Carry the tokenizer's code projection and codebook, to compute pre-training targets in-model.",
    )
    code_dim: int = Field(default=128, ge=1, description="Code dimension of the code head (official 128).")
    channel_rows: int = Field(default=256, ge=1, description="Rows of the LLM-side channel embedding.")
    causal_encoder_inputs: bool = Field(
        default=False,
        description="Fix for docs/reference.md §6.3-4. Official (False): the encoder sees the whole sample in "
        "both directions, so the LLM input at second t carries information from later seconds (future leakage, "
        "through attention and through the patch embedding's GroupNorm statistics). True: when producing LLM "
        "inputs the encoder attends under a time-causal mask and pools GroupNorm statistics over the same and "
        "earlier seconds only; pre-training targets still come from the bidirectional encoder (a second pass).",
    )
    patch_norm_over_real_tokens: bool = Field(
        default=False,
        description="Official (False): the patch embedding's GroupNorm pools padding patches too, so features "
        "depend on the padded length (e.g. 276 vs 1024 tokens). True: real patches only.",
    )
    per_sample_text_positions: bool = Field(
        default=False,
        description="Fix for docs/reference.md §6.3-5. Official (False): text positions start at the batch-wide "
        "last second + 1, so they depend on the other samples of the batch. True: at each sample's own last "
        "second + 1.",
    )
    scaled_new_embedding_init: bool = Field(
        default=False,
        description="Fix for docs/reference.md §6.3-8. Official (False): new ``wte`` rows (incl. [SEP]) and the "
        "channel embedding start at N(0, 1), about 7x GPT-2's token norms. True: N(0, 0.02).",
    )
    channel_embed_init_std: float | None = Field(
        default=None,
        gt=0,
        description="Std of the GPT's channel embedding at initialisation. None: as ``scaled_new_embedding_init`` "
        "says (0.02 with it, the official 1.0 without). The channel embedding is how the GPT tells channels apart; "
        "at 0.02 it is ~2 % of the EEG features' norm in the tiny model (docs/recipe.md §21).",
    )
    activation_checkpointing: bool = Field(
        default=False,
        description="Recompute GPT block activations in the backward pass (memory for compute).",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "base": dict(gpt=GPTConfig.PRESETS["gpt2"], encoder=_OFFICIAL_ENCODER),
        "large": dict(gpt=GPTConfig.PRESETS["gpt2-medium"], encoder=_OFFICIAL_ENCODER),
        "xl": dict(gpt=GPTConfig.PRESETS["gpt2-xl"], encoder=_OFFICIAL_ENCODER),
        "tiny": dict(
            gpt=GPTConfig.PRESETS["tiny"], encoder=dict(n_layer=2, n_head=4, n_embd=128), code_dim=32
        ),
        "debug": dict(
            gpt=GPTConfig.PRESETS["debug"], encoder=dict(n_layer=2, n_head=2, n_embd=16), code_dim=8
        ),
    }

    @property
    def num_codes(self) -> int:
        return self.gpt.num_codes


class ConfigOverrides(BaseModel):
    """Base of the overrides models: unknown keys are errors; unset (None) fields are left out of dumps, so
    ``model_dump()`` is exactly the dict to pass to ``preset(name, **overrides)``, and a dumped job config
    validates back to the same overrides."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


def overrides_model(cls: type[ModelConfig]) -> type[ConfigOverrides]:
    """The pydantic model of overrides of ``cls``: every field optional (None = keep the preset's), nested
    configs as their own overrides models, unknown keys rejected."""
    fields: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, ModelConfig):
            # reuse the module-level overrides model, so that configs holding it pickle (Ray ships them)
            annotation = getattr(
                sys.modules[__name__], f"{annotation.__name__}Overrides", None
            ) or overrides_model(annotation)
        fields[name] = (annotation | None, Field(default=None, description=info.description))
    return create_model(
        f"{cls.__name__}Overrides",
        __base__=ConfigOverrides,
        __module__=__name__,
        __doc__=f"Fields of :class:`{cls.__name__}` that differ from the preset.",
        **fields,
    )


# Module-level names, in dependency order, so that pickle finds them.
GPTConfigOverrides = overrides_model(GPTConfig)
EEGTransformerConfigOverrides = overrides_model(EEGTransformerConfig)
TokenizerConfigOverrides = overrides_model(TokenizerConfig)
NeuroLMConfigOverrides = overrides_model(NeuroLMConfig)
