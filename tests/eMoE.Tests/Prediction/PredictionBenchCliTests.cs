using System.Text.Json;
using eMoE.Cli;
using eMoE.Prediction;
using NUnit.Framework;

namespace eMoE.Tests.Prediction;

/// <summary>`emoe bench prediction` on a small synthetic trace, in-process.</summary>
[NonParallelizable]
public sealed class PredictionBenchCliTests
{
    [Test]
    public async Task BenchPredictionWritesTablesForEveryDesignAndPeriod()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"emoe-pred-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            // Two tasks with fixed favourite experts in each layer; prefill of 4 tokens, then 6 decode steps.
            string trace = Path.Combine(dir, "trace.jsonl");
            using (var w = new StreamWriter(trace))
            {
                for (int i = 0; i < 12; i++)
                {
                    string task = i % 2 == 0 ? "a" : "b";
                    int[] pair = task == "a" ? [1, 2] : [5, 6];
                    var p = new PromptTrace { Prompt = i, Task = task, NumLayers = 2, NumExperts = 8, TopK = 2 };
                    p.Steps.Add(new StepTrace { Start = 0, Tokens = 4, Experts = [[.. pair, .. pair, .. pair, .. pair], [.. pair, .. pair, .. pair, .. pair]], Weights = [new float[8], new float[8]] });
                    for (int s = 0; s < 6; s++) p.Steps.Add(new StepTrace { Start = 4 + s, Tokens = 1, Experts = [pair, pair], Weights = [new float[2], new float[2]] });
                    p.WriteLine(w);
                }
            }
            string outDir = Path.Combine(dir, "out");
            var (oldOut, oldErr) = (Console.Out, Console.Error);
            using var stdout = new StringWriter();
            using var stderr = new StringWriter();
            Console.SetOut(stdout);
            Console.SetError(stderr);
            int code;
            try
            {
                code = await EmoeCli.RunAsync(["bench", "prediction", "--trace", trace, "--out", outDir, "--timing-invocations", "100"]);
            }
            finally
            {
                Console.SetOut(oldOut);
                Console.SetError(oldErr);
            }
            Assert.That(code, Is.EqualTo(0), stderr.ToString());
            Assert.That(stdout.ToString(), Does.Contain("| design |").And.Contain("| 40 |").And.Contain("F1 1.000 (met)"));
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")));
            Assert.That(json.RootElement.GetProperty("designs").GetArrayLength(), Is.GreaterThanOrEqualTo(4));
            Assert.That(json.RootElement.GetProperty("periodic").EnumerateArray().Select(p => p.GetProperty("every_n").GetInt32()).Distinct(),
                Is.EquivalentTo(new[] { 1, 5, 10, 20, 40 }));
            Assert.That(File.ReadAllText(Path.Combine(outDir, "results.md")), Is.EqualTo(stdout.ToString()));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
