using System.CommandLine;
using eMoE.Compute;
using eMoE.Model;

namespace eMoE.Cli.Commands;

/// <summary><c>emoe inspect</c>: what a checkpoint holds, without loading it onto a device.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var command = new Command("inspect", "Architecture, sizes and parameter counts of a model") { model };
        command.SetAction(parse =>
        {
            string dir = CommonOptions.ResolveModel(parse.GetValue(model));
            var c = ModelConfig.Load(dir);
            using var checkpoint = Checkpoint.Open(dir);
            WeightLayout.Validate(c, checkpoint);
            var tensors = checkpoint.Tensors.ToList();
            long expertParams = tensors.Where(t => WeightLayout.IsExpertTensor(t.Name)).Sum(t => t.ElementCount);
            long expertBytes = tensors.Where(t => WeightLayout.IsExpertTensor(t.Name)).Sum(t => t.ByteLength);
            long allParams = tensors.Sum(t => t.ElementCount);
            long perExpert = 3L * c.HiddenSize * c.ExpertIntermediateSize;
            long activeParams = allParams - expertParams + (long)c.NumLayers * c.TopK * perExpert;
            var dtypes = string.Join(", ", tensors.GroupBy(t => t.DType).Select(g => $"{g.Key} x{g.Count()}"));

            Console.Out.WriteLine($"model:        {dir}");
            Console.Out.WriteLine($"architecture: {c.Architecture} (q/k norm: {c.QkNorm})");
            Console.Out.WriteLine($"layers:       {c.NumLayers}, hidden {c.HiddenSize}, heads {c.NumHeads} (kv {c.NumKvHeads}, head dim {c.HeadDim}), vocab {c.VocabSize}");
            Console.Out.WriteLine($"experts:      {c.NumExperts} per layer, top-{c.TopK}, intermediate {c.ExpertIntermediateSize}, renormalise top-k: {c.NormTopKProb}");
            Console.Out.WriteLine($"rope theta:   {c.RopeTheta}, rms eps {c.RmsNormEps}, max positions {c.MaxPositionEmbeddings}, tied embeddings: {c.TieWordEmbeddings}");
            Console.Out.WriteLine($"parameters:   {allParams:N0} total, {activeParams:N0} active per token, {expertParams:N0} in experts");
            Console.Out.WriteLine($"bytes:        {ByteSize.Format(expertBytes)} expert weights ({expertBytes:N0}) vs {ByteSize.Format(checkpoint.TotalBytes - expertBytes)} everything else ({checkpoint.TotalBytes - expertBytes:N0})");
            Console.Out.WriteLine($"tensors:      {tensors.Count} ({dtypes})");
            return 0;
        });
        return command;
    }
}
