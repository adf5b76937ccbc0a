using System.Text.Json;
using eMoE.Cli;
using NUnit.Framework;

namespace eMoE.Tests.Cli;

/// <summary>The `emoe` commands run in-process with stdout and stderr captured.</summary>
[NonParallelizable]
public sealed class CliTests
{
    private static readonly string Fixture = RepoPaths.Combine("tests", "fixtures", "models", "mixtral-f32");

    /// <summary>Runs one `emoe` command line in-process; returns its exit code, stdout and stderr.</summary>
    internal static async Task<(int Code, string Out, string Err)> Emoe(params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int code = await EmoeCli.RunAsync(args);
            return (code, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Test]
    public async Task InspectReportsArchitectureAndExpertBytes()
    {
        var (code, stdout, _) = await Emoe("inspect", "--model", Fixture);
        Assert.That(code, Is.EqualTo(0));
        Assert.That(stdout, Does.Contain("Mixtral").And.Contain("8 per layer, top-2").And.Contain("expert weights"));
    }

    [Test]
    public async Task TokenizePrintsIdsOnOneLine()
    {
        string dir = RepoPaths.Combine("tests", "fixtures", "tokenizers", "sentencepiece");
        var (code, stdout, _) = await Emoe("tokenize", "--model", dir, "--text", "Hello world");
        Assert.That(code, Is.EqualTo(0));
        var ids = stdout.Trim().Split(' ').Select(int.Parse).ToArray();
        Assert.That(ids, Is.EqualTo(eMoE.Model.MoeTokenizer.Load(dir).Encode("Hello world")));
        var (_, withSpecial, _) = await Emoe("tokenize", "--model", dir, "--text", "Hello world", "--add-special");
        Assert.That(withSpecial.Trim().Split(' ').Select(int.Parse).First(), Is.EqualTo(1), "BOS first");
    }

    [Test]
    public async Task ErrorsAreOneLineWithoutStackTrace()
    {
        var (code, stdout, stderr) = await Emoe("inspect", "--model", "/nonexistent/model");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        Assert.That(stderr, Does.StartWith("emoe: error: ").And.Contain("config.json"));

        var (verboseCode, _, verbose) = await Emoe("inspect", "--model", "/nonexistent/model", "--verbose");
        Assert.That(verboseCode, Is.EqualTo(1));
        Assert.That(verbose, Does.Contain(" at "), "--verbose adds the stack trace");
    }

    [Test]
    public async Task BadSamplingSettingsAreRejected()
    {
        var (code, _, stderr) = await Emoe("generate", "--model", Fixture, "--prompt", "x", "--top-p", "1.5");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain("top-p"));
    }

    [Test]
    public async Task AbsentCudaIsAClearError()
    {
        var (code, _, stderr) = await Emoe("inspect", "--model", Fixture);
        Assert.That(code, Is.EqualTo(0), stderr);
        var (cudaCode, _, cudaErr) = await Emoe("generate", "--model", Fixture, "--prompt", "x", "--device", "cuda");
        if (cudaCode == 0) Assert.Pass("a CUDA device is present here");
        Assert.That(cudaErr, Does.Contain("CUDA"));
    }

    [Test]
    public async Task PerplexityJsonHasTheDocumentedKeys()
    {
        string dir = RepoPaths.ShippedModel;
        string file = Directory.GetFiles(Path.Combine(dir, "eval"), "*.test.txt").OrderBy(f => f).First();
        string sample = Path.Combine(Path.GetTempPath(), "emoe-ppl-sample.txt");
        File.WriteAllText(sample, File.ReadAllText(file)[..1500]);
        var (code, stdout, stderr) = await Emoe("perplexity", "--model", dir, "--file", sample, "--context", "64", "--json", "--device", "ilgpu-cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var json = JsonDocument.Parse(stdout);
        Assert.That(json.RootElement.GetProperty("tokens").GetInt64(), Is.GreaterThan(0));
        double nll = json.RootElement.GetProperty("nll").GetDouble();
        Assert.That(json.RootElement.GetProperty("perplexity").GetDouble(), Is.EqualTo(Math.Exp(nll)).Within(1e-9).Percent);
    }

    [Test]
    public async Task GenerateStreamsTextAndSummarises()
    {
        var (code, stdout, stderr) = await Emoe("generate", "--prompt", "And God said", "--max-tokens", "12", "--device", "ilgpu-cpu",
            "--model", RepoPaths.ShippedModel);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout.Trim(), Is.Not.Empty);
        Assert.That(stderr, Does.Match(@"prompt tokens: \d+, generated tokens: 12, prefill: [\d.]+ tok/s, decode: [\d.]+ tok/s, device memory: "));
    }

    [TestCase("--predict-every", "2", "--policy", "Lru", "with --policy predicted")]
    [TestCase("--policy", "Predicted", "give --predict-every")]
    [TestCase("--predict-every", "0", "at least 1")]
    [TestCase("--layer-profile", "x.json", "give --predict-every")]
    [TestCase("--pregate-width", "3", "needs --pregate")]
    [TestCase("--pregate-weights", "x.safetensors", "needs --pregate")]
    [TestCase("--reroute-max-weight", "0.5", "needs --on-miss reroute")]
    [TestCase("--on-miss", "Reroute", "--reroute-max-weight", "1.5", "between 0 and 1")]
    [TestCase("--pregate", "--pregate-weights", "/nonexistent/p.safetensors", "not found")]
    [TestCase("--policy", "Belady", "future routing")]
    public async Task InconsistentPredictionOptionsAreRejected(params string[] args)
    {
        var (code, _, stderr) = await Emoe(["generate", "--model", Fixture, "--prompt", "x", "--device", "ilgpu-cpu", .. args[..^1]]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain(args[^1]));
    }

    [Test]
    public async Task SpeedBenchReportsLlamaSpeedKeysOnThePeerPrompt()
    {
        var (code, stdout, stderr) = await Emoe("bench", "speed", "--model", Fixture, "--device", "cpu", "--threads", "1",
            "--prompt-tokens", "8", "--gen-tokens", "8", "--reps", "1", "--json");
        Assert.That(code, Is.EqualTo(0), stderr);
        using var json = JsonDocument.Parse(stdout);
        var r = json.RootElement;
        Assert.That(r.GetProperty("n_prompt").GetInt32(), Is.EqualTo(8));
        Assert.That(r.GetProperty("n_gen").GetInt32(), Is.EqualTo(8));
        Assert.That(r.GetProperty("threads").GetInt32(), Is.EqualTo(1));
        Assert.That(r.GetProperty("prefill_tok_s").GetDouble(), Is.GreaterThan(0));
        Assert.That(r.GetProperty("decode_tok_s").GetDouble(), Is.GreaterThan(0));
        Assert.That(r.GetProperty("decode_tok_s_runs").GetArrayLength(), Is.EqualTo(1));
        Assert.That(r.GetProperty("model_bytes").GetInt64(), Is.EqualTo(new FileInfo(Path.Combine(Fixture, "model.safetensors")).Length));
        if (OperatingSystem.IsLinux()) Assert.That(r.GetProperty("peak_rss_bytes").GetInt64(), Is.GreaterThan(1 << 20));

        // The prompt is llama_speed.py's: lcg_ids(8, 512) = these ids; first_generated is the greedy continuation after the
        // prefill's token (llama_speed.py's first id is the argmax after its first decode call), end of sequence ignored.
        int[] prompt = [448, 42, 155, 310, 5, 500, 333, 323];
        using var model = eMoE.Inference.MoeModel.Load(Fixture, new eMoE.Inference.ModelOptions { Device = eMoE.Compute.DeviceKind.Cpu, Threads = 1 });
        var expected = new List<int>();
        var options = new eMoE.Inference.GenerationOptions { MaxTokens = 9, StopAtEndOfSequence = false };
        await foreach (int id in model.GenerateIdsAsync(prompt, options, new eMoE.Inference.GenerationStats())) expected.Add(id);
        Assert.That(r.GetProperty("first_generated").EnumerateArray().Select(e => e.GetInt32()), Is.EqualTo(expected.Skip(1)));

        var (tableCode, table, tableErr) = await Emoe("bench", "speed", "--model", Fixture, "--threads", "1", "--prompt-tokens", "8", "--gen-tokens", "8", "--reps", "1");
        Assert.That(tableCode, Is.EqualTo(0), tableErr);
        Assert.That(table, Does.Contain("| pp8 |").And.Contain("| tg8 |").And.Contain("peak RSS"));
        var (badCode, _, badErr) = await Emoe("bench", "speed", "--model", Fixture, "--reps", "0");
        Assert.That(badCode, Is.EqualTo(1));
        Assert.That(badErr, Does.Contain("at least 1"));
    }

    [TestCase("0", "between 1 and 99, got '0'")]
    [TestCase("100", "between 1 and 99, got '100'")]
    public async Task EngineBenchRejectsImpossibleBudgets(string budget, string error)
    {
        var (code, _, stderr) = await Emoe("bench", "engine", "--model", Fixture, "--device", "ilgpu-cpu", "--budgets", "50", budget, "--out", Path.GetTempPath());
        Assert.That(code, Is.EqualTo(1));
        Assert.That(stderr, Does.Contain(error));
    }

    [Test]
    public async Task FitPregateWritesGatesThatGenerateAccepts()
    {
        string dir = RepoPaths.ShippedModel;
        string sample = Path.Combine(Path.GetTempPath(), "emoe-pregate-fit.txt");
        File.WriteAllText(sample, File.ReadAllText(Path.Combine(dir, "eval", "austen.test.txt"))[..1200]);
        string gates = Path.Combine(Path.GetTempPath(), "emoe-pregate-fit.safetensors");
        var (code, stdout, stderr) = await Emoe("fit-pregate", "--model", dir, "--text", sample, "--device", "ilgpu-cpu", "--out", gates);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stdout, Does.Contain("fitted pre-gates for layers 1..3"));
        (code, _, stderr) = await Emoe("generate", "--model", dir, "--prompt", "It is a truth", "--max-tokens", "6", "--device", "ilgpu-cpu",
            "--expert-memory", "50%", "--pregate", "--pregate-weights", gates);
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Contain("pre-gate accuracy"));
    }

    [Test]
    public async Task PerplexityRunsThePredictorOverItsWindows()
    {
        string dir = RepoPaths.ShippedModel;
        string sample = Path.Combine(Path.GetTempPath(), "emoe-ppl-predict.txt");
        File.WriteAllText(sample, File.ReadAllText(Path.Combine(dir, "eval", "bible.test.txt"))[..2400]);
        var (code, stdout, stderr) = await Emoe("perplexity", "--model", dir, "--file", sample, "--context", "64", "--json", "--device", "ilgpu-cpu",
            "--expert-memory", "50%", "--predict-every", "2", "--task", "bible");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Match(@"Predicted\), .*predictor runs [1-9]"));
        var (_, reference, _) = await Emoe("perplexity", "--model", dir, "--file", sample, "--context", "64", "--json", "--device", "ilgpu-cpu");
        Assert.That(stdout, Is.EqualTo(reference), "load mode: the predictor changes residency, never the scores");
    }

    [Test]
    public async Task ProfileWritesAProfileThePredictorLoads()
    {
        string dir = RepoPaths.ShippedModel;
        string text = Path.Combine(Path.GetTempPath(), "emoe-profile-text.txt");
        string output = Path.Combine(Path.GetTempPath(), $"emoe-profile-{Guid.NewGuid():N}.json");
        File.WriteAllText(text, File.ReadAllText(Path.Combine(dir, "eval", "python.test.txt"))[..1200]);
        try
        {
            var (code, stdout, stderr) = await Emoe("profile", "--model", dir, "--device", "ilgpu-cpu", "--text", $"python={text}", "--tokens", "64",
                "--context", "32", "--out", output);
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stdout, Does.Contain("| python |"));
            var profile = eMoE.Prediction.LayerSensitivityProfile.Load(output);
            Assert.That(profile.Tasks["python"].Layers, Has.Count.EqualTo(4));
            Assert.That(profile.Tasks["python"].Tokens, Is.EqualTo(62), "two 32-token windows, 31 scored each");
            (code, _, stderr) = await Emoe("generate", "--model", dir, "--prompt", "def", "--max-tokens", "4", "--device", "ilgpu-cpu",
                "--expert-memory", "50%", "--predict-every", "1", "--layer-profile", output, "--task", "python");
            Assert.That(code, Is.EqualTo(0), stderr);
            (code, _, stderr) = await Emoe("profile", "--model", dir, "--device", "ilgpu-cpu", "--text", "python", "--out", output);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stderr, Does.Contain("TASK=FILE"));
        }
        finally
        {
            File.Delete(output);
        }
    }

    [Test]
    public async Task BatchWritesOneLinePerPromptInInputOrderEqualToGenerate()
    {
        string dir = RepoPaths.ShippedModel;
        string input = Path.Combine(Path.GetTempPath(), $"emoe-batch-{Guid.NewGuid():N}.jsonl");
        string output = Path.ChangeExtension(input, ".out.jsonl");
        File.WriteAllLines(input,
        [
            """{"id": "a", "prompt": "And God said", "max_tokens": 6, "task": "bible"}""",
            """{"id": 7, "prompt": "def parse(", "max_tokens": 9, "temperature": 0.8, "seed": 3}""",
            "",
            """{"id": "c", "prompt": "CHAPTER 1", "reference": "ignored"}""",
        ]);
        try
        {
            var (code, stdout, stderr) = await Emoe("batch", "--model", dir, "--device", "ilgpu-cpu", "--file", input, "--out", output, "--max-tokens", "5",
                "--max-batch", "3");
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stdout, Is.Empty);
            Assert.That(stderr, Does.Contain("requests 3").And.Contain("output tokens").And.Contain("tok/s").And.Contain("largest batch"));
            var lines = File.ReadAllLines(output).Select(l => JsonDocument.Parse(l).RootElement).ToList();
            Assert.That(lines.Select(l => l.GetProperty("id").ToString()), Is.EqualTo(new[] { "a", "7", "c" }));
            Assert.That(lines[1].GetProperty("id").ValueKind, Is.EqualTo(JsonValueKind.Number), "ids come back as given");
            Assert.That(lines.Select(l => l.GetProperty("completion_tokens").GetInt32()), Is.EqualTo(new[] { 6, 9, 5 }), "max_tokens per line, else --max-tokens");
            foreach (var l in lines)
            {
                Assert.That(l.GetProperty("finish_reason").GetString(), Is.EqualTo("length").Or.EqualTo("stop"));
                Assert.That(l.GetProperty("tokens").GetArrayLength(), Is.EqualTo(l.GetProperty("completion_tokens").GetInt32()));
                Assert.That(l.GetProperty("prompt_tokens").GetInt32(), Is.Positive);
                Assert.That(l.GetProperty("ttft_ms").GetDouble(), Is.Positive.And.LessThanOrEqualTo(l.GetProperty("e2e_ms").GetDouble()));
            }
            // The same greedy text as `emoe generate` for the same prompt.
            (code, stdout, _) = await Emoe("generate", "--model", dir, "--device", "ilgpu-cpu", "--prompt", "And God said", "--max-tokens", "6");
            Assert.That(code, Is.EqualTo(0));
            Assert.That(stdout.TrimEnd('\n'), Is.EqualTo(lines[0].GetProperty("text").GetString()));
        }
        finally
        {
            File.Delete(input);
            File.Delete(output);
        }
    }

    [TestCase("""{"prompt": "x"}""", "'id'")]
    [TestCase("""{"id": 1}""", "'prompt'")]
    [TestCase("""{"id": 1, "prompt": "x", "max_tokens": 0}""", "'max_tokens'")]
    [TestCase("""{"id": 1, "prompt": "x", "temperature": -1}""", "'temperature'")]
    [TestCase("""{"id": 1, "prompt": "x", "task": 5}""", "'task'")]
    [TestCase("not json", "not JSON")]
    public async Task BatchNamesTheLineAndFieldOfABadRequest(string line, string expected)
    {
        string input = Path.Combine(Path.GetTempPath(), $"emoe-batch-{Guid.NewGuid():N}.jsonl");
        File.WriteAllLines(input, ["""{"id": 0, "prompt": "fine"}""", line]);
        try
        {
            var (code, _, stderr) = await Emoe("batch", "--model", RepoPaths.ShippedModel, "--device", "ilgpu-cpu", "--file", input);
            Assert.That(code, Is.EqualTo(1));
            Assert.That(stderr, Does.Contain($"{input}:2").And.Contain(expected));
        }
        finally
        {
            File.Delete(input);
        }
    }

    [Test]
    public async Task BenchHybridWritesModelledCostsPerMode()
    {
        string output = Path.Combine(Path.GetTempPath(), $"emoe-hybrid-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = await Emoe("bench", "hybrid", "--device", "ilgpu-cpu", "--prompts", "1", "--tokens", "2", "--budgets", "50",
                "--links", "pcie4", "1KB", "--out", output);
            Assert.That(code, Is.EqualTo(0), stderr);
            Assert.That(stdout, Does.Contain("| 50 % | PCIe 4.0 x16 |"));
            var rows = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "results.json"))).RootElement.GetProperty("rows").EnumerateArray().ToList();
            Assert.That(rows.Select(r => r.GetProperty("mode").GetString()).Distinct(), Is.EquivalentTo(new[] { "copy-only", "host-only", "auto" }));
            Assert.That(rows, Has.Count.EqualTo(6));
            Assert.That(rows.All(r => r.GetProperty("outputs_equal_all_resident").GetBoolean()), "the same tokens wherever the experts ran");
            var slowAuto = rows.Single(r => r.GetProperty("link").GetString() == "1KB" && r.GetProperty("mode").GetString() == "auto");
            Assert.That(slowAuto.GetProperty("host_assignments").GetInt64(), Is.Positive, "over a 1 kB/s link auto computes on the host");
        }
        finally
        {
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
        }
    }
}
