"""NeuroLM's models as framework-free ``nn.Module``s (no Ray, no DeepSpeed here).

- :mod:`neurolm.models.tokenizer`: the text-aligned VQ tokenizer (stage 1), ``NeuralTokenizer(TokenizerConfig)``.
- :mod:`neurolm.models.neurolm`: GPT-2 over EEG features and text (stages 2-3), ``NeuroLM(NeuroLMConfig)``.
- :mod:`neurolm.models.masks`: attention masks built on the device from token indices.
- :mod:`neurolm.models.gpt`: the GPT-2 backbone and ``load_hf_gpt2``.
- :mod:`neurolm.models.generate`: inference: greedy ``generate``, constrained ``score_options``, answer parsing.
- :mod:`neurolm.models.official`: official checkpoint import/export (model classes only).
- :mod:`neurolm.models.io`: ``save_pretrained`` / ``load_pretrained`` (safetensors + config JSON), loading either
  format, ``neurolm import-official``.
- :mod:`neurolm.models.golden`: ``compare_with_golden`` against the official golden vectors.

Model configs (pydantic, with presets) live in :mod:`neurolm.model_config`, below this package, so that job
configs can validate them; GPT-2 vocabulary ids in :mod:`neurolm.vocab`.
"""
