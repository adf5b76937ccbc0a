using System.Text.Json;
using System.Text.Json.Nodes;
using NUnit.Framework;

namespace eMoE.Tests.Cli;

/// <summary>`emoe bench serve` end to end on a tiny configuration, in-process.</summary>
[NonParallelizable]
public sealed class ServeBenchCliTests
{
    private static readonly string[] RowFields =
        ["scheduler", "rate", "budget", "max_batch", "slo_attainment", "throughput_tok_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_mean_ms"];

    [Test]
    public async Task BenchServeWritesARowPerSchedulerWithTheIssuesFields()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"emoe-serve-{Guid.NewGuid():N}");
        try
        {
            string model = ShortModel(Path.Combine(dir, "model"));
            string outDir = Path.Combine(dir, "out");
            // About 10 s on an idle 2-core machine: five prompts of 8 tokens, one rate, one budget, one batch limit, both schedulers.
            var (code, stdout, stderr) = await CliTests.Emoe("bench", "serve", "--model", model, "--device", "ilgpu-cpu", "--prompts-per-task", "1",
                "--rates", "4", "--budgets", "50", "--max-batch", "4", "--out", outDir);
            Assert.That(code, Is.EqualTo(0), stderr);

            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")));
            var root = json.RootElement;
            Assert.That(root.GetProperty("requests").GetInt32(), Is.EqualTo(5), "one prompt of each of the five tasks");
            Assert.That(root.GetProperty("calibration").GetProperty("tasks").GetArrayLength(), Is.EqualTo(5));
            Assert.That(root.GetProperty("calibration").GetProperty("capacity_req_s").GetDouble(), Is.Positive);
            foreach (var slo in root.GetProperty("slos").EnumerateObject())
                Assert.That(slo.Value.GetProperty("ttft_ms").GetDouble(), Is.Positive, slo.Name);
            var rows = root.GetProperty("rows").EnumerateArray().ToList();
            Assert.That(rows.Select(r => r.GetProperty("scheduler").GetString()), Is.EquivalentTo(new[] { "fcfs", "emoe" }));
            foreach (var row in rows)
            {
                foreach (string field in RowFields) Assert.That(row.TryGetProperty(field, out _), field);
                Assert.That(row.GetProperty("rate").GetDouble(), Is.EqualTo(4));
                Assert.That(row.GetProperty("budget").GetDouble(), Is.EqualTo(0.5));
                Assert.That(row.GetProperty("max_batch").GetInt32(), Is.EqualTo(4));
                Assert.That(row.GetProperty("slo_attainment").GetDouble(), Is.InRange(0.0, 1.0));
                Assert.That(row.GetProperty("throughput_tok_s").GetDouble(), Is.Positive);
                Assert.That(row.GetProperty("largest_batch").GetInt32(), Is.InRange(1, 4));
                double ttft50 = row.GetProperty("ttft_p50_ms").GetDouble(), ttft99 = row.GetProperty("ttft_p99_ms").GetDouble();
                Assert.That(ttft50, Is.Positive.And.LessThanOrEqualTo(ttft99));
                Assert.That(row.GetProperty("tpot_p50_ms").GetDouble(), Is.Positive.And.LessThanOrEqualTo(row.GetProperty("tpot_p99_ms").GetDouble()));
                Assert.That(row.GetProperty("e2e_mean_ms").GetDouble(), Is.GreaterThanOrEqualTo(row.GetProperty("ttft_mean_ms").GetDouble()));
                Assert.That(row.GetProperty("outputs_equal_full_memory").ValueKind, Is.EqualTo(JsonValueKind.Null), "no 100% run to compare with");
                var served = row.GetProperty("per_request").EnumerateArray().ToList();
                Assert.That(served, Has.Count.EqualTo(5));
                int met = served.Count(x => x.GetProperty("ttft_met").GetBoolean() && x.GetProperty("tpot_met").GetBoolean());
                Assert.That(row.GetProperty("slo_attainment").GetDouble(), Is.EqualTo(met / 5.0).Within(1e-12));
                Assert.That(served.Sum(x => x.GetProperty("tokens").GetInt32()), Is.EqualTo(row.GetProperty("output_tokens").GetInt64()));
            }

            Assert.That(File.ReadAllText(Path.Combine(outDir, "results.md")), Is.EqualTo(stdout));
            Assert.That(stdout, Does.Contain("## Calibration").And.Contain("## Targets").And.Contain("| FCFS | 4 | 4 |").And.Contain("| eMoE | 4 | 4 |"));
            Assert.That(stderr.Split('\n').Count(l => l.Contains("50% batch 4 rate 4:")), Is.EqualTo(2), "one progress line per run");
            foreach (string chart in new[] { "slo_attainment_50.svg", "p99_latency_50.svg" })
                Assert.That(File.ReadAllText(Path.Combine(outDir, chart)), Does.StartWith("<svg").And.Contain("<polyline"), chart);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestCase("--budgets", "0", "between 1 and 100")]
    [TestCase("--max-batch", "0", "at least 1")]
    [TestCase("--rates", "-1", "positive request rates")]
    [TestCase("--prompts-per-task", "0", "must be positive")]
    public async Task BenchServeRejectsImpossibleSettings(string option, string value, string error)
    {
        var (code, _, stderr) = await CliTests.Emoe("bench", "serve", "--model", RepoPaths.ShippedModel, "--device", "ilgpu-cpu", option, value, "--out", Path.GetTempPath());
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain(error));
    }

    /// <summary>The shipped model with an evaluation set of the first prompt of each task cut to 8 output tokens, so a whole run takes seconds.</summary>
    internal static string ShortModel(string dir)
    {
        string shipped = RepoPaths.ShippedModel;
        Directory.CreateDirectory(Path.Combine(dir, "eval"));
        foreach (string file in new[] { "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" })
            File.Copy(Path.Combine(shipped, file), Path.Combine(dir, file));
        foreach (string eval in Directory.GetFiles(Path.Combine(shipped, "eval"), "*.jsonl"))
        {
            var first = JsonNode.Parse(File.ReadLines(eval).First())!;
            first["max_tokens"] = 8;
            File.WriteAllText(Path.Combine(dir, "eval", Path.GetFileName(eval)), first.ToJsonString() + "\n");
        }
        return dir;
    }
}
