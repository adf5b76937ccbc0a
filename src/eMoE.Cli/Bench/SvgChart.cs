using System.Globalization;
using System.Text;

namespace eMoE.Cli.Bench;

/// <summary>One line of a <see cref="SvgChart.Lines"/> chart: points in x order, a colour index and a dashed or solid stroke.</summary>
internal sealed record LineSeries(string Name, IReadOnlyList<(double X, double Y)> Points, int Color, bool Dashed);

/// <summary>
/// Charts written as SVG, all on one frame (title, y grid and axis label, legend on the right):
/// grouped bars (groups along x, e.g. budgets; one bar per series, e.g. policies) and lines over a
/// numeric x axis (e.g. arrival rates).
/// </summary>
internal static class SvgChart
{
    private static readonly string[] Colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"];
    private const int Width = 760, Height = 420, Left = 70, Right = 170, Top = 40, Bottom = 60;
    private const double PlotW = Width - Left - Right, PlotH = Height - Top - Bottom;

    public static string GroupedBars(string title, string yLabel, IReadOnlyList<string> groups, IReadOnlyList<(string Name, double[] Values)> series, double yMax,
        double yMin = 0)
    {
        double groupW = PlotW / groups.Count, barW = groupW * 0.8 / series.Count;
        var svg = Frame(title, yLabel, yMax, yMin);
        for (int g = 0; g < groups.Count; g++)
        {
            double x0 = Left + g * groupW + groupW * 0.1;
            for (int s = 0; s < series.Count; s++)
            {
                double v = Math.Clamp(series[s].Values[g], yMin, yMax), h = PlotH * (v - yMin) / (yMax - yMin);
                svg.Append(CultureInfo.InvariantCulture,
                    $"<rect x=\"{F(x0 + s * barW)}\" y=\"{F(Top + PlotH - h)}\" width=\"{F(barW - 1)}\" height=\"{F(h)}\" fill=\"{Color(s)}\"/>\n");
            }
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(Left + g * groupW + groupW / 2)}\" y=\"{F(Top + PlotH + 18)}\" text-anchor=\"middle\">{groups[g]}</text>\n");
        }
        Legend(svg, series.Select((s, i) => (s.Name, i, false)).ToList(), asLines: false);
        return Close(svg);
    }

    /// <summary>
    /// Lines over a base-2 logarithmic x axis (rates that double step by step are evenly spaced),
    /// ticked at every x some series has; y from 0 to <paramref name="yMax"/> (higher points are drawn at the top).
    /// </summary>
    public static string Lines(string title, string xLabel, string yLabel, IReadOnlyList<LineSeries> series, double yMax)
    {
        var xs = series.SelectMany(s => s.Points.Select(p => p.X)).Distinct().Order().ToList();
        if (xs.Count == 0 || xs[0] <= 0) throw new ArgumentException("a line chart needs positive x values (the x axis is logarithmic)");
        double lo = Math.Log2(xs[0]), span = Math.Log2(xs[^1]) - lo;
        // A single x sits in the middle; otherwise the range keeps a margin of 5% of the width on both sides.
        double X(double x) => span == 0 ? Left + PlotW / 2 : Left + PlotW * (0.05 + 0.9 * (Math.Log2(x) - lo) / span);
        double Y(double y) => Top + PlotH - PlotH * Math.Clamp(y, 0, yMax) / yMax;
        var svg = Frame(title, yLabel, yMax);
        foreach (double x in xs)
        {
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(X(x))}\" x2=\"{F(X(x))}\" y1=\"{F(Top + PlotH)}\" y2=\"{F(Top + PlotH + 4)}\" stroke=\"#444\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(X(x))}\" y=\"{F(Top + PlotH + 18)}\" text-anchor=\"middle\">{x.ToString("0.###", CultureInfo.InvariantCulture)}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(Left + PlotW / 2)}\" y=\"{F(Top + PlotH + 42)}\" text-anchor=\"middle\">{xLabel}</text>\n");
        foreach (var s in series)
        {
            string points = string.Join(" ", s.Points.Select(p => $"{F(X(p.X))},{F(Y(p.Y))}"));
            svg.Append(CultureInfo.InvariantCulture,
                $"<polyline points=\"{points}\" fill=\"none\" stroke=\"{Color(s.Color)}\" stroke-width=\"2\"{Dash(s.Dashed)}/>\n");
            foreach (var p in s.Points)
                svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{F(X(p.X))}\" cy=\"{F(Y(p.Y))}\" r=\"3\" fill=\"{Color(s.Color)}\"/>\n");
        }
        Legend(svg, series.Select(s => (s.Name, s.Color, s.Dashed)).ToList(), asLines: true);
        return Close(svg);
    }

    /// <summary>The SVG opening, white background, title, five horizontal grid lines with y values from <paramref name="yMin"/> to <paramref name="yMax"/>, and the y axis label.</summary>
    private static StringBuilder Frame(string title, string yLabel, double yMax, double yMin = 0)
    {
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"{Width}\" height=\"{Height}\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n");
        for (int i = 0; i <= 5; i++)
        {
            double v = yMin + (yMax - yMin) * i / 5, y = Top + PlotH - PlotH * i / 5;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{Left}\" x2=\"{F(Left + PlotW)}\" y1=\"{F(y)}\" y2=\"{F(y)}\" stroke=\"#ddd\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left - 6}\" y=\"{F(y + 4)}\" text-anchor=\"end\">{F(v)}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text transform=\"translate(18,{F(Top + PlotH / 2)}) rotate(-90)\" text-anchor=\"middle\">{yLabel}</text>\n");
        return svg;
    }

    /// <summary>One legend entry per series right of the plot: a colour square (bars) or a short stroke (lines), then the name.</summary>
    private static void Legend(StringBuilder svg, IReadOnlyList<(string Name, int Color, bool Dashed)> entries, bool asLines)
    {
        for (int s = 0; s < entries.Count; s++)
        {
            double y = Top + 10 + s * 20;
            var (name, color, dashed) = entries[s];
            if (asLines)
                svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{F(Left + PlotW + 10)}\" x2=\"{F(Left + PlotW + 28)}\" y1=\"{F(y - 4)}\" y2=\"{F(y - 4)}\" stroke=\"{Color(color)}\" stroke-width=\"2\"{Dash(dashed)}/>");
            else
                svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{F(Left + PlotW + 15)}\" y=\"{F(y - 10)}\" width=\"12\" height=\"12\" fill=\"{Color(color)}\"/>");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{F(Left + PlotW + 32)}\" y=\"{F(y)}\">{name}</text>\n");
        }
    }

    private static string Close(StringBuilder svg) => svg.Append("</svg>\n").ToString();

    private static string Color(int index) => Colors[index % Colors.Length];

    private static string Dash(bool dashed) => dashed ? " stroke-dasharray=\"6 4\"" : "";

    private static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
}
