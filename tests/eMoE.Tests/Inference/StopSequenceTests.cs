using eMoE.Compute;
using eMoE.Inference;
using NUnit.Framework;

namespace eMoE.Tests.Inference;

/// <summary>Stop sequences: text is released as soon as it cannot be the start of one, and nothing from a stop sequence on.</summary>
public sealed class StopSequenceTests
{
    private static string Feed(StopSequenceFilter filter, params string[] pieces) => string.Concat(pieces.Select(filter.Append)) + filter.Flush();

    [Test]
    public void TextBeforeTheStopIsReleasedAndTheRestDropped()
    {
        var filter = new StopSequenceFilter(["\n\n", "END"]);
        Assert.That(Feed(filter, "Hello", " wor", "ld\n", "\nmore"), Is.EqualTo("Hello world"));
        Assert.That(filter.Stopped);
        Assert.That(filter.Append("ignored"), Is.Empty);
    }

    [Test]
    public void APossibleStartIsHeldBackUntilDecided()
    {
        var filter = new StopSequenceFilter(["END"]);
        Assert.That(filter.Append("the E"), Is.EqualTo("the "), "'E' may start END");
        Assert.That(filter.Append("N"), Is.Empty);
        Assert.That(filter.Append("ding"), Is.EqualTo("ENding"), "ENd is not END: released");
        Assert.That(filter.Append(" E"), Is.EqualTo(" "));
        Assert.That(filter.Flush(), Is.EqualTo("E"), "at the end nothing can complete it");
        Assert.That(filter.Stopped, Is.False);
    }

    [Test]
    public void TheEarliestStopWins()
    {
        var filter = new StopSequenceFilter(["bc", "ab"]);
        Assert.That(Feed(filter, "xxabcd"), Is.EqualTo("xx"));
    }

    [Test]
    public void EmptyStopSequencesAreRefused() => Assert.Throws<ArgumentException>(() => _ = new StopSequenceFilter([""]));

    [Test]
    public async Task GenerationStopsAtAStopSequenceWithItsOwnFinishReason()
    {
        using var model = MoeModel.Load(RepoPaths.ShippedModel, new ModelOptions { Device = DeviceKind.Cpu });
        var options = new GenerationOptions { MaxTokens = 64, StopAtEndOfSequence = false };
        var full = model.Generate("And God said", options);
        string text = "";
        await foreach (var token in full) text += token.Text;
        text += full.FlushText();
        // Stop at the first newline of the reference continuation.
        int newline = text.IndexOf('\n');
        Assert.That(newline, Is.Positive, "the continuation has a line break to stop at");
        var stopped = model.Generate("And God said", options with { StopSequences = ["\n"] });
        string cut = "";
        await foreach (var token in stopped) cut += token.Text;
        cut += stopped.FlushText();
        Assert.That(cut, Is.EqualTo(text[..newline]));
        Assert.That(stopped.Stats.FinishReason, Is.EqualTo(FinishReason.StopSequence));
        for (int i = 0; i < 100 && model.EngineStats.Running > 0; i++) await Task.Delay(10);
        Assert.That(model.EngineStats.KvBlocksUsed, Is.Zero, "the stopped request was freed");
    }
}
