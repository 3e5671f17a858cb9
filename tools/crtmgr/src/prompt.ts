import { createInterface, type Interface } from 'node:readline'

/** Line-by-line questions on a terminal. End of input (Ctrl-D) answers every question with its default. */
export class Prompter {
  readonly #rl: Interface
  readonly #lines: string[] = []
  #waiting: ((line: string | null) => void) | undefined
  #closed = false

  constructor(
    input: NodeJS.ReadableStream,
    private readonly output: NodeJS.WritableStream,
  ) {
    this.#rl = createInterface({ input, terminal: false })
    this.#rl.on('line', (line) => {
      if (this.#waiting) {
        const w = this.#waiting
        this.#waiting = undefined
        w(line)
      } else this.#lines.push(line)
    })
    this.#rl.on('close', () => {
      this.#closed = true
      this.#waiting?.(null)
      this.#waiting = undefined
    })
  }

  /** Writes the question, returns the trimmed answer ('' for end of input). */
  async ask(question: string): Promise<string> {
    this.output.write(question)
    const line = this.#lines.length > 0 ? this.#lines.shift()! : this.#closed ? null : await new Promise<string | null>((r) => (this.#waiting = r))
    if (line === null) this.output.write('\n')
    return (line ?? '').trim()
  }

  /** Asks until the answer is one of `choices` (lowercased); '' gives `fallback`. */
  async choose<T extends string>(question: string, choices: Record<string, T>, fallback: T): Promise<T> {
    for (;;) {
      const answer = (await this.ask(question)).toLowerCase()
      if (answer === '') return fallback
      const picked = choices[answer]
      if (picked !== undefined) return picked
      this.output.write(`Please answer one of: ${Object.keys(choices).join(', ')} (or press Enter for the default)\n`)
      if (this.#closed && this.#lines.length === 0) return fallback
    }
  }

  async yesNo(question: string, fallback: boolean): Promise<boolean> {
    return (await this.choose(question, { y: 'yes', yes: 'yes', n: 'no', no: 'no' }, fallback ? 'yes' : 'no')) === 'yes'
  }

  close(): void {
    this.#rl.close()
  }
}
