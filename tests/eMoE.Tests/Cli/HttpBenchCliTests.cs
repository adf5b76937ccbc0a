using System.Text.Json;
using NUnit.Framework;

namespace eMoE.Tests.Cli;

/// <summary>`emoe bench http` end to end on a tiny configuration: the server in process on loopback, a few clients.</summary>
[NonParallelizable]
public sealed class HttpBenchCliTests
{
    [Test]
    public async Task BenchHttpLosesNoRequestCountsTheCancelledAndMetricsAddUp()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"emoe-http-{Guid.NewGuid():N}");
        try
        {
            string model = ServeBenchCliTests.ShortModel(Path.Combine(dir, "model"));
            string outDir = Path.Combine(dir, "out");
            // 12 requests of at most 8 tokens from 4 clients, 25% cancelled: a few seconds on the host backend.
            var (code, stdout, stderr) = await CliTests.Emoe("bench", "http", "--model", model, "--device", "cpu", "--requests", "12", "--concurrency", "4",
                "--cancel-fraction", "0.25", "--light-requests", "5", "--max-batch", "4", "--timeout", "300", "--out", outDir);
            Assert.That(code, Is.EqualTo(0), stderr + stdout);

            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")));
            var root = json.RootElement;
            var load = root.GetProperty("load");
            var outcomes = load.GetProperty("outcomes");
            Assert.That(outcomes.GetProperty("lost").GetInt32(), Is.Zero);
            Assert.That(outcomes.GetProperty("cancel_planned").GetInt32(), Is.EqualTo(3), "25% of 12");
            int cancelled = outcomes.GetProperty("cancelled").GetInt32(), complete = outcomes.GetProperty("complete").GetInt32();
            Assert.That(cancelled, Is.InRange(0, 3), "a planned cancellation counts as complete when its answer ends first");
            int errors = outcomes.GetProperty("clean_errors").EnumerateObject().Sum(e => e.Value.GetInt32());
            Assert.That(complete + cancelled + errors, Is.EqualTo(12));

            var perRequest = load.GetProperty("per_request").EnumerateArray().ToList();
            Assert.That(perRequest, Has.Count.EqualTo(12));
            Assert.That(perRequest.Count(r => r.GetProperty("outcome").GetString() == "cancelled"), Is.EqualTo(cancelled));
            Assert.That(perRequest.Count(r => r.GetProperty("stream").GetBoolean()), Is.EqualTo(6), "half streamed");
            Assert.That(perRequest.Count(r => r.GetProperty("endpoint").GetString() == "chat"), Is.EqualTo(6), "half chat");
            foreach (var r in perRequest.Where(r => r.GetProperty("cancel_after_chunks").ValueKind == JsonValueKind.Number))
                Assert.That(r.GetProperty("stream").GetBoolean(), "only streamed requests are cancelled mid-stream");
            foreach (var r in perRequest.Where(r => r.GetProperty("outcome").GetString() == "cancelled"))
                Assert.That(r.GetProperty("chunks").GetInt32(), Is.EqualTo(r.GetProperty("cancel_after_chunks").GetInt32()));
            foreach (var r in perRequest.Where(r => r.GetProperty("outcome").GetString() == "complete"))
            {
                Assert.That(r.GetProperty("completion_tokens").GetInt32(), Is.InRange(1, r.GetProperty("max_tokens").GetInt32()));
                Assert.That(r.GetProperty("finish_reason").GetString(), Is.AnyOf("stop", "length"));
            }

            var checks = root.GetProperty("metrics_checks").EnumerateArray().ToList();
            Assert.That(checks, Has.Count.GreaterThanOrEqualTo(10));
            foreach (var check in checks) Assert.That(check.GetProperty("passed").GetBoolean(), check.GetProperty("check").GetString() + ": " + check.GetProperty("actual").GetString());
            Assert.That(checks.Select(c => c.GetProperty("check").GetString()), Has.Some.StartsWith("slots free"));
            var targets = root.GetProperty("targets");
            Assert.That(targets.GetProperty("zero_lost").GetBoolean());
            Assert.That(targets.GetProperty("metrics_add_up").GetBoolean());

            Assert.That(load.GetProperty("throughput_tok_s").GetDouble(), Is.Positive);
            var streamed = load.GetProperty("streamed");
            if (streamed.GetProperty("requests").GetInt32() > 0)
            {
                var ttft = streamed.GetProperty("ttft");
                Assert.That(ttft.GetProperty("p50_ms").GetDouble(), Is.Positive.And.LessThanOrEqualTo(ttft.GetProperty("p99_ms").GetDouble()));
            }
            var light = root.GetProperty("light_load");
            Assert.That(light.GetProperty("requests").GetInt32(), Is.EqualTo(5));
            Assert.That(light.GetProperty("http_complete").GetInt32(), Is.EqualTo(5));
            Assert.That(light.GetProperty("in_process_engine_ttft").GetProperty("p99_ms").GetDouble(), Is.Positive);
            Assert.That(light.GetProperty("http_ttft").GetProperty("p99_ms").GetDouble(), Is.Positive);
            Assert.That(light.GetProperty("ttft_p99_ratio").GetDouble(), Is.Positive);

            Assert.That(File.ReadAllText(Path.Combine(outDir, "results.md")), Is.EqualTo(stdout));
            Assert.That(stdout, Does.Contain("## Load").And.Contain("## /metrics").And.Contain("## Light load").And.Contain("## Targets").And.Contain("0 lost requests: 0 lost"));
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [Test]
    public async Task BenchHttpStopsAtItsTimeoutWithAnError()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"emoe-http-{Guid.NewGuid():N}");
        try
        {
            // A bound too short to load the model: the run stops with a clear error instead of hanging, and writes no results.
            var (code, _, stderr) = await CliTests.Emoe("bench", "http", "--model", RepoPaths.ShippedModel, "--device", "cpu", "--timeout", "0.001", "--out", dir);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stderr, Does.Contain("the run's timeout"));
            Assert.That(File.Exists(Path.Combine(dir, "results.json")), Is.False);
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
        }
    }

    [TestCase("--requests", "0", "--requests must be at least 1")]
    [TestCase("--concurrency", "0", "--concurrency must be at least 1")]
    [TestCase("--rate", "0", "--rate takes a positive request rate")]
    [TestCase("--rate", "-2", "--rate takes a positive request rate")]
    [TestCase("--light-rate", "0", "--light-rate takes a positive request rate")]
    [TestCase("--cancel-fraction", "0.6", "--cancel-fraction must be between 0 and 0.5")]
    [TestCase("--max-tokens", "0", "--max-tokens must be at least 1")]
    [TestCase("--max-batch", "0", "--max-batch must be at least 1")]
    [TestCase("--timeout", "0", "--timeout must be a positive number of seconds")]
    public async Task BenchHttpRejectsImpossibleSettings(string option, string value, string error)
    {
        var (code, _, stderr) = await CliTests.Emoe("bench", "http", "--model", RepoPaths.ShippedModel, "--device", "cpu", option, value, "--out", Path.GetTempPath());
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain(error));
    }
}
