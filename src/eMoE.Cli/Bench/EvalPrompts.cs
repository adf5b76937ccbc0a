using System.Text.Json;
using System.Text.Json.Serialization;

namespace eMoE.Cli.Bench;

/// <summary>One evaluation request: a held-out prompt of a task and that task's typical output length.</summary>
internal sealed record EvalPrompt(
    [property: JsonPropertyName("task")] string Task,
    [property: JsonPropertyName("prompt")] string Prompt,
    [property: JsonPropertyName("max_tokens")] int MaxTokens)
{
    /// <summary>The held-out continuation of the prompt, when the file has one.</summary>
    [JsonPropertyName("reference")] public string Reference { get; init; } = "";
}

/// <summary>The shipped model's evaluation prompts (eval/*.jsonl), as a stream of requests with tasks interleaved.</summary>
internal static class EvalPrompts
{
    /// <summary>
    /// The first <paramref name="perTask"/> prompts of every task after its first <paramref name="skip"/>,
    /// interleaved round-robin (bible, austen, ..., bible, austen, ...), in a fixed order.
    /// </summary>
    public static List<EvalPrompt> LoadInterleaved(string modelDirectory, int perTask, int skip = 0)
    {
        string dir = Path.Combine(modelDirectory, "eval");
        var files = Directory.Exists(dir) ? Directory.GetFiles(dir, "*.jsonl").OrderBy(f => f, StringComparer.Ordinal).ToList() : [];
        if (files.Count == 0) throw new CliException($"{dir}: no evaluation prompts (*.jsonl)");
        var perFile = files.Select(f => Read(f).Skip(skip).Take(perTask).ToList()).ToList();
        var result = new List<EvalPrompt>();
        for (int i = 0; i < perTask; i++)
        {
            foreach (var prompts in perFile)
            {
                if (i < prompts.Count) result.Add(prompts[i]);
            }
        }
        return result;
    }

    /// <summary>
    /// The mean max_tokens of each task's evaluation prompts: the scheduler's prior for a task's
    /// output length. Empty when the model has no evaluation prompts.
    /// </summary>
    public static Dictionary<string, double> MeanMaxTokens(string modelDirectory)
    {
        string dir = Path.Combine(modelDirectory, "eval");
        if (!Directory.Exists(dir)) return [];
        return Directory.GetFiles(dir, "*.jsonl").SelectMany(Read).GroupBy(p => p.Task, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Average(p => (double)p.MaxTokens), StringComparer.Ordinal);
    }

    /// <summary>Each task's held-out test text file (eval/&lt;task&gt;.test.txt), by task, in task order.</summary>
    public static List<(string Task, string File)> TestTexts(string modelDirectory)
    {
        string eval = Path.Combine(modelDirectory, "eval");
        var found = Directory.Exists(eval) ? Directory.GetFiles(eval, "*.test.txt").OrderBy(f => f, StringComparer.Ordinal).ToList() : [];
        if (found.Count == 0) throw new CliException($"{eval}: no <task>.test.txt files");
        return found.Select(f => (Path.GetFileName(f)[..^".test.txt".Length], f)).ToList();
    }

    private static IEnumerable<EvalPrompt> Read(string path)
    {
        int line = 0;
        foreach (string text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            EvalPrompt? prompt;
            try
            {
                prompt = JsonSerializer.Deserialize<EvalPrompt>(text);
            }
            catch (JsonException e)
            {
                throw new CliException($"{path}:{line}: not an evaluation prompt ({e.Message})");
            }
            if (prompt is null || string.IsNullOrEmpty(prompt.Task) || prompt.MaxTokens <= 0)
                throw new CliException($"{path}:{line}: an evaluation prompt needs task, prompt and a positive max_tokens");
            yield return prompt;
        }
    }
}
