// ESLint formatter: one line per finding, "path:line:col: message (rule)", paths relative to the working folder, so
// that every finding names its file and line (editors and terminals make these clickable).
import { relative } from 'node:path'

export default function format(results) {
  const lines = []
  for (const result of results) {
    const file = relative(process.cwd(), result.filePath)
    for (const m of result.messages) {
      const kind = m.severity === 2 ? 'error' : 'warning'
      lines.push(`${file}:${m.line ?? 0}:${m.column ?? 0}: ${kind}: ${m.message} (${m.ruleId ?? 'eslint'})`)
    }
  }
  return lines.length ? `${lines.join('\n')}\n` : ''
}
