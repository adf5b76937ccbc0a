namespace eMoE.Model;

/// <summary>
/// Hugging Face tensor names and shapes per architecture. Checkpoint weights are
/// [out_features, in_features], row-major.
/// </summary>
public static class WeightLayout
{
    /// <summary>Token embedding [V, H].</summary>
    public const string Embedding = "model.embed_tokens.weight";
    /// <summary>Final RMSNorm [H].</summary>
    public const string FinalNorm = "model.norm.weight";
    /// <summary>LM head [V, H] (absent when tied to the embedding).</summary>
    public const string LmHead = "lm_head.weight";

    /// <summary>Prefix of block <paramref name="layer"/>.</summary>
    public static string Layer(int layer) => $"model.layers.{layer}.";

    /// <summary>Pre-attention RMSNorm [H].</summary>
    public static string InputNorm(int layer) => Layer(layer) + "input_layernorm.weight";
    /// <summary>Pre-MoE RMSNorm [H].</summary>
    public static string PostAttentionNorm(int layer) => Layer(layer) + "post_attention_layernorm.weight";
    /// <summary>Attention projection: q [heads*D, H], k/v [kvHeads*D, H], o [H, heads*D].</summary>
    public static string Attention(int layer, char projection) => Layer(layer) + $"self_attn.{projection}_proj.weight";
    /// <summary>q or k RMSNorm weight (Qwen3-MoE: [D]; OLMoE: [heads*D] / [kvHeads*D]).</summary>
    public static string QkNorm(int layer, char which) => Layer(layer) + $"self_attn.{which}_norm.weight";

    /// <summary>Router [E, H].</summary>
    public static string Router(ModelConfig c, int layer) =>
        Layer(layer) + (c.Architecture == Architecture.Mixtral ? "block_sparse_moe.gate.weight" : "mlp.gate.weight");

    /// <summary>The three projections of one expert: gate [I, H], up [I, H], down [H, I].</summary>
    public static (string Gate, string Up, string Down) Expert(ModelConfig c, int layer, int expert)
    {
        if (c.Architecture == Architecture.Mixtral)
        {
            string p = Layer(layer) + $"block_sparse_moe.experts.{expert}.";
            return (p + "w1.weight", p + "w3.weight", p + "w2.weight");
        }
        string q = Layer(layer) + $"mlp.experts.{expert}.";
        return (q + "gate_proj.weight", q + "up_proj.weight", q + "down_proj.weight");
    }

    /// <summary>Whether a tensor name belongs to an expert (the part that can be offloaded).</summary>
    public static bool IsExpertTensor(string name) => name.Contains(".experts.", StringComparison.Ordinal);

    /// <summary>
    /// Checks that every tensor the architecture needs is present with the right shape, and that
    /// no expert has another dtype than the first (experts share one device slab).
    /// </summary>
    /// <exception cref="ModelFormatException">Names the first missing or misshapen tensor.</exception>
    public static void Validate(ModelConfig c, Checkpoint checkpoint)
    {
        long h = c.HiddenSize;
        checkpoint.Require(Embedding, c.VocabSize, h);
        checkpoint.Require(FinalNorm, h);
        if (!c.TieWordEmbeddings) checkpoint.Require(LmHead, c.VocabSize, h);
        TensorDType? expertType = null;
        for (int l = 0; l < c.NumLayers; l++)
        {
            checkpoint.Require(InputNorm(l), h);
            checkpoint.Require(PostAttentionNorm(l), h);
            checkpoint.Require(Attention(l, 'q'), c.QDim, h);
            checkpoint.Require(Attention(l, 'k'), c.KvDim, h);
            checkpoint.Require(Attention(l, 'v'), c.KvDim, h);
            checkpoint.Require(Attention(l, 'o'), h, c.QDim);
            if (c.QkNorm == QkNormKind.PerHead)
            {
                checkpoint.Require(QkNorm(l, 'q'), c.HeadDim);
                checkpoint.Require(QkNorm(l, 'k'), c.HeadDim);
            }
            else if (c.QkNorm == QkNormKind.Whole)
            {
                checkpoint.Require(QkNorm(l, 'q'), c.QDim);
                checkpoint.Require(QkNorm(l, 'k'), c.KvDim);
            }
            checkpoint.Require(Router(c, l), c.NumExperts, h);
            for (int e = 0; e < c.NumExperts; e++)
            {
                var (gate, up, down) = Expert(c, l, e);
                foreach (var t in new[]
                {
                    checkpoint.Require(gate, c.ExpertIntermediateSize, h),
                    checkpoint.Require(up, c.ExpertIntermediateSize, h),
                    checkpoint.Require(down, h, c.ExpertIntermediateSize),
                })
                {
                    expertType ??= t.DType;
                    if (t.DType != expertType)
                        throw new ModelFormatException($"{t.File}: expert tensor '{t.Name}' is {t.DType}, other experts are {expertType}");
                }
            }
        }
    }
}
