using eMoE.Model;
using NUnit.Framework;

namespace eMoE.Tests.Tokenization;

/// <summary>The managed NFC / NFD that stands in for ICU under invariant globalization.</summary>
public sealed class UnicodeNormalizationTests
{
    [TestCase("plain ascii", "plain ascii")]
    [TestCase("e\u0301", "\u00e9")]
    [TestCase("\u1100\u1161\u11A8", "\uAC01")] // Hangul L V T
    [TestCase("a\u0323\u0302", "\u1EAD")]
    [TestCase("a\u0302\u0323", "\u1EAD")] // canonical reordering before composition
    [TestCase("\u095C", "\u0921\u093C")] // composition exclusion
    [TestCase("\u212B", "\u00C5")] // singleton
    [TestCase("\u0344", "\u0308\u0301")] // non-starter decomposition
    [TestCase("\u0301e", "\u0301e")] // leading non-starter stays
    [TestCase("\uD835\uDC00\u0301", "\uD835\uDC00\u0301")] // astral letters pass through
    public void Nfc(string input, string expected) => Assert.That(UnicodeNormalization.Nfc(input), Is.EqualTo(expected));

    [TestCase("\u00e9", "e\u0301")]
    [TestCase("\uAC01", "\u1100\u1161\u11A8")]
    [TestCase("\u1EAD", "a\u0323\u0302")]
    public void Nfd(string input, string expected) => Assert.That(UnicodeNormalization.Nfd(input), Is.EqualTo(expected));
}
