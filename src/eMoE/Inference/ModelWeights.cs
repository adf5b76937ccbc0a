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

/// <summary>The weights of one transformer block where the backend reads them. Shapes in the comments.</summary>
internal sealed class LayerWeights
{
    public required Weight InputNorm;          // [H]
    public required Weight Q;                  // [heads * D, H]
    public required Weight K;                  // [kvHeads * D, H]
    public required Weight V;                  // [kvHeads * D, H]
    public required Weight O;                  // [H, heads * D]
    public Weight? QNorm;                      // [D] (per head) or [heads * D] (whole), or none
    public Weight? KNorm;                      // [D] or [kvHeads * D], or none
    public required Weight PostAttentionNorm;  // [H]
    public required Weight Router;             // [E, H]

    public IEnumerable<Weight> All() =>
        new[] { InputNorm, Q, K, V, O, QNorm, KNorm, PostAttentionNorm, Router }.OfType<Weight>();
}

/// <summary>
/// All weights where the backend reads them: the dense part tensor by tensor (uploaded to a device,
/// or read in place from the memory-mapped checkpoint on the host); the experts in the backend's
/// expert residency (a device cache under the memory budget, fed from host memory, or in place).
/// The checkpoint stays open, mapped, for as long as the weights live.
/// </summary>
internal sealed class ModelWeights : IDisposable
{
    public required Checkpoint Checkpoint;    // memory-mapped; the host backend reads from it
    public required Weight Embedding;   // [V, H]
    public required LayerWeights[] Layers;    // [L]
    public required Weight FinalNorm;   // [H]
    public required Weight LmHead;      // [V, H] (the embedding itself when tied)
    public required IExpertResidency Experts; // device slots under the budget, each [gate | up | down] of one expert; or in place
    public long ExpertBytes;                  // all experts, whether resident or not
    public long DenseBytes;

    /// <summary>Uploads the dense weights to <paramref name="backend"/>, then opens the experts' residency: <paramref name="createExperts"/>, or the backend's own.</summary>
    public static ModelWeights Upload(ComputeBackend backend, ModelConfig c, Checkpoint checkpoint, ExpertCacheOptions experts,
        IProgress<LoadProgress>? progress, Func<IExpertResidency>? createExperts = null)
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
        Weight Up(string name)
        {
            var info = checkpoint.Get(name);
            var tensor = backend.LoadWeight(checkpoint, info);
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

        var cache = createExperts?.Invoke() ?? backend.CreateExperts(c, checkpoint, experts);
        long expertBytes = cache.ExpertBytes * cache.TotalExperts;
        Report(expertBytes, cache.TotalExperts * 3);

        return new ModelWeights
        {
            Checkpoint = checkpoint,
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
        Checkpoint.Dispose();
    }
}
