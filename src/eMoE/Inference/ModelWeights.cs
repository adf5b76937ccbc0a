using eMoE.Compute;
using eMoE.Experts;
using eMoE.Model;

namespace eMoE.Inference;

/// <summary>Progress of loading a model onto the device.</summary>
/// <param name="BytesDone">Bytes of tensor data uploaded so far.</param>
/// <param name="BytesTotal">Bytes of tensor data in the checkpoint.</param>
/// <param name="TensorsDone">Tensors prepared so far.</param>
/// <param name="TensorsTotal">Tensors to prepare.</param>
public readonly record struct LoadProgress(long BytesDone, long BytesTotal, int TensorsDone, int TensorsTotal);

/// <summary>The weights of one transformer block on the device. Shapes in the comments.</summary>
internal sealed class LayerWeights
{
    public required DeviceTensor InputNorm;          // [H]
    public required DeviceTensor Q;                  // [heads * D, H]
    public required DeviceTensor K;                  // [kvHeads * D, H]
    public required DeviceTensor V;                  // [kvHeads * D, H]
    public required DeviceTensor O;                  // [H, heads * D]
    public DeviceTensor? QNorm;                      // [D] (per head) or [heads * D] (whole), or none
    public DeviceTensor? KNorm;                      // [D] or [kvHeads * D], or none
    public required DeviceTensor PostAttentionNorm;  // [H]
    public required DeviceTensor Router;             // [E, H]

    public IEnumerable<DeviceTensor> All() =>
        new[] { InputNorm, Q, K, V, O, QNorm, KNorm, PostAttentionNorm, Router }.OfType<DeviceTensor>();
}

/// <summary>
/// All weights on the device: the dense part tensor by tensor, resident; the experts in an
/// <see cref="ExpertCache"/> under the memory budget, fed from host memory.
/// </summary>
internal sealed class ModelWeights : IDisposable
{
    public required DeviceTensor Embedding;   // [V, H]
    public required LayerWeights[] Layers;    // [L]
    public required DeviceTensor FinalNorm;   // [H]
    public required DeviceTensor LmHead;      // [V, H] (the embedding itself when tied)
    public required ExpertCache Experts;      // slots under the budget, each [gate | up | down] of one expert
    public long ExpertBytes;                  // all experts, whether resident or not
    public long DenseBytes;

    public static ModelWeights Upload(ComputeDevice device, ModelConfig c, Checkpoint checkpoint, ExpertCacheOptions experts,
        IProgress<LoadProgress>? progress)
    {
        WeightLayout.Validate(c, checkpoint);
        int tensorsTotal = checkpoint.Tensors.Count();
        long bytesTotal = checkpoint.TotalBytes, bytesDone = 0;
        int tensorsDone = 0;
        void Report(long bytes, int tensors)
        {
            bytesDone += bytes;
            tensorsDone += tensors;
            progress?.Report(new LoadProgress(bytesDone, bytesTotal, tensorsDone, tensorsTotal));
        }
        DeviceTensor Up(string name)
        {
            var info = checkpoint.Get(name);
            var tensor = DeviceTensor.Upload(device, checkpoint, info);
            Report(info.ByteLength, 1);
            return tensor;
        }

        var embedding = Up(WeightLayout.Embedding);
        var layers = new LayerWeights[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            layers[l] = new LayerWeights
            {
                InputNorm = Up(WeightLayout.InputNorm(l)),
                Q = Up(WeightLayout.Attention(l, 'q')),
                K = Up(WeightLayout.Attention(l, 'k')),
                V = Up(WeightLayout.Attention(l, 'v')),
                O = Up(WeightLayout.Attention(l, 'o')),
                QNorm = c.QkNorm == QkNormKind.None ? null : Up(WeightLayout.QkNorm(l, 'q')),
                KNorm = c.QkNorm == QkNormKind.None ? null : Up(WeightLayout.QkNorm(l, 'k')),
                PostAttentionNorm = Up(WeightLayout.PostAttentionNorm(l)),
                Router = Up(WeightLayout.Router(c, l)),
            };
        }
        var finalNorm = Up(WeightLayout.FinalNorm);
        var lmHead = c.TieWordEmbeddings ? embedding : Up(WeightLayout.LmHead);

        var cache = new ExpertCache(device, c, checkpoint, experts);
        long expertBytes = cache.ExpertBytes * cache.TotalExperts;
        Report(expertBytes, cache.TotalExperts * 3);

        return new ModelWeights
        {
            Embedding = embedding,
            Layers = layers,
            FinalNorm = finalNorm,
            LmHead = lmHead,
            Experts = cache,
            ExpertBytes = expertBytes,
            DenseBytes = checkpoint.TotalBytes - expertBytes,
        };
    }

    public void Dispose()
    {
        Embedding.Dispose();
        foreach (var layer in Layers)
        {
            foreach (var t in layer.All()) t.Dispose();
        }
        FinalNorm.Dispose();
        if (!ReferenceEquals(LmHead, Embedding)) LmHead.Dispose();
        Experts.Dispose();
    }
}
