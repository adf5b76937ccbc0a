using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace eMoE.Model.Jinja;

/// <summary>
/// The JavaScript definitions that @huggingface/jinja (the renderer transformers.js uses, and our
/// test oracle) inherits from its host: what counts as white space, how numbers print, what
/// <c>JSON.stringify</c> escapes, <c>parseInt</c> / <c>parseFloat</c> and <c>==</c> on strings.
/// </summary>
internal static partial class Js
{
    /// <summary>JavaScript's <c>\s</c> and <c>String.prototype.trim</c> set (not .NET's: U+0085 is out, U+FEFF in).</summary>
    public const string SpaceClass = @"\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff";

    public static bool IsSpace(char c) => c is '\t' or '\n' or '\v' or '\f' or '\r' or ' ' or '\u00a0' or '\u1680'
        or (>= '\u2000' and <= '\u200a') or '\u2028' or '\u2029' or '\u202f' or '\u205f' or '\u3000' or '\ufeff';

    /// <summary>JavaScript's <c>\w</c> without the u flag: ASCII letters, digits and underscore.</summary>
    public static bool IsWordChar(char c) => c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_';

    public static bool IsDigit(char c) => c is >= '0' and <= '9';

    public static string Trim(string s) => TrimEnd(TrimStart(s));

    public static string TrimStart(string s)
    {
        int i = 0;
        while (i < s.Length && IsSpace(s[i])) i++;
        return s[i..];
    }

    public static string TrimEnd(string s)
    {
        int i = s.Length;
        while (i > 0 && IsSpace(s[i - 1])) i--;
        return s[..i];
    }

    /// <summary><c>Number.prototype.toString()</c>: the shortest digits that round-trip, in ECMAScript's layout.</summary>
    public static string NumberToString(double d)
    {
        if (double.IsNaN(d)) return "NaN";
        if (d == 0) return "0";
        if (double.IsInfinity(d)) return d > 0 ? "Infinity" : "-Infinity";
        if (d < 0) return "-" + NumberToString(-d);

        // .NET's "R" is the shortest round-trip form too, only laid out differently (1E-07, 1.5E+21).
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E');
        int exponent = e < 0 ? 0 : int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        string mantissa = e < 0 ? r : r[..e];
        int dot = mantissa.IndexOf('.');
        string digits = dot < 0 ? mantissa : mantissa.Remove(dot, 1);
        int n = (dot < 0 ? mantissa.Length : dot) + exponent; // value = 0.digits * 10^n
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') lead++;
        digits = digits[lead..].TrimEnd('0');
        n -= lead;
        int k = digits.Length;
        if (k <= n && n <= 21) return digits + new string('0', n - k);
        if (0 < n && n <= 21) return digits[..n] + "." + digits[n..];
        if (-6 < n && n <= 0) return "0." + new string('0', -n) + digits;
        string exp = (n - 1 >= 0 ? "+" : "-") + Math.Abs(n - 1).ToString(CultureInfo.InvariantCulture);
        return (k == 1 ? digits : digits[0] + "." + digits[1..]) + "e" + exp;
    }

    /// <summary>A Python-style float: integral values keep ".0" (<c>toFixed(1)</c>), -0 is "-0.0".</summary>
    public static string FloatToString(double d)
    {
        if (d == 0 && double.IsNegative(d)) return "-0.0";
        if (double.IsFinite(d) && d % 1 == 0)
            return Math.Abs(d) < 1e21 ? d.ToString("F1", CultureInfo.InvariantCulture) : NumberToString(d);
        return NumberToString(d);
    }

    /// <summary><c>JSON.stringify</c> of a number: like toString, but NaN and infinities are null.</summary>
    public static string JsonNumber(double d) => double.IsFinite(d) ? NumberToString(d) : "null";

    /// <summary><c>JSON.stringify</c> of a string (well-formed: lone surrogates escaped, nothing else beyond JSON's minimum).</summary>
    public static string JsonString(string s)
    {
        var sb = new StringBuilder(s.Length + 2);
        sb.Append('"');
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20)
                    {
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                    {
                        sb.Append(c).Append(s[++i]);
                    }
                    else if (char.IsSurrogate(c))
                    {
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    }
                    else
                    {
                        sb.Append(c);
                    }
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    /// <summary>tojson's ensure_ascii: every UTF-16 unit from U+007F up as \uXXXX.</summary>
    public static string AsciiSafe(string json)
    {
        var sb = new StringBuilder(json.Length);
        foreach (char c in json)
        {
            if (c >= 0x7f) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary><c>parseInt(s, 10)</c>: leading white space, a sign, digits; NaN without digits.</summary>
    public static double ParseInt(string s)
    {
        var m = ParseIntPattern().Match(TrimStart(s));
        return m.Success ? double.Parse(m.Value, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture) : double.NaN;
    }

    /// <summary><c>parseFloat(s)</c>: the longest decimal prefix after white space; NaN without one.</summary>
    public static double ParseFloat(string s)
    {
        var m = ParseFloatPattern().Match(TrimStart(s));
        if (!m.Success) return double.NaN;
        if (m.Value.EndsWith("Infinity", StringComparison.Ordinal)) return m.Value[0] == '-' ? double.NegativeInfinity : double.PositiveInfinity;
        return double.Parse(m.Value, NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    /// <summary>ToNumber on a string, as <c>==</c> between a string and a number does.</summary>
    public static double ToNumber(string s)
    {
        string t = Trim(s);
        if (t.Length == 0) return 0;
        if (t is "Infinity" or "+Infinity") return double.PositiveInfinity;
        if (t == "-Infinity") return double.NegativeInfinity;
        if (t.Length > 2 && t[0] == '0' && (char)(t[1] | 0x20) is 'x' or 'o' or 'b')
        {
            int radix = (char)(t[1] | 0x20) switch { 'x' => 16, 'o' => 8, _ => 2 };
            double value = 0;
            foreach (char c in t[2..])
            {
                int digit = c switch { >= '0' and <= '9' => c - '0', >= 'a' and <= 'z' => c - 'a' + 10, >= 'A' and <= 'Z' => c - 'A' + 10, _ => 99 };
                if (digit >= radix) return double.NaN;
                value = value * radix + digit;
            }
            return value;
        }
        return DecimalLiteral().IsMatch(t) ? double.Parse(t, NumberStyles.Float, CultureInfo.InvariantCulture) : double.NaN;
    }

    [GeneratedRegex(@"^[+-]?[0-9]+")]
    private static partial Regex ParseIntPattern();

    [GeneratedRegex(@"^[+-]?(Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)")]
    private static partial Regex ParseFloatPattern();

    [GeneratedRegex(@"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")]
    private static partial Regex DecimalLiteral();
}
