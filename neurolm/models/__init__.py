"""NeuroLM's models as framework-free ``nn.Module``s (no Ray, no DeepSpeed here).

- :mod:`neurolm.models.tokenizer`: the text-aligned VQ tokenizer (stage 1), ``NeuralTokenizer(TokenizerConfig)``.
- :mod:`neurolm.models.neurolm`: GPT-2 over EEG features and text (stages 2-3), ``NeuroLM(NeuroLMConfig)``.
- :mod:`neurolm.models.masks`: attention masks built on the device from token indices.
- :mod:`neurolm.models.gpt`: the GPT-2 backbone and ``load_hf_gpt2``.
- :mod:`neurolm.models.io`: ``save_pretrained`` / ``load_pretrained`` (safetensors + config JSON).
- :mod:`neurolm.models.official`: official checkpoint import/export and ``compare_with_golden``.
"""
