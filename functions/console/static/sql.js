// Building the CREATE TABLE of the "New table" form. Identifiers are always quoted (a " inside is doubled),
// types come only from a fixed list, so nothing typed into the form can become SQL of its own.

export const COLUMN_TYPES = [
  "bigint",
  "bigserial",
  "boolean",
  "bytea",
  "date",
  "double precision",
  "integer",
  "jsonb",
  "numeric",
  "real",
  "serial",
  "text",
  "timestamp",
  "timestamptz",
  "uuid",
  "varchar(255)",
];

const MAX_IDENTIFIER_BYTES = 63; // Postgres would silently cut a longer name

export class FormError extends Error {}

export function quoteIdent(name) {
  const value = String(name);
  if (!value.trim()) throw new FormError("a name is empty");
  if (value.includes("\u0000")) throw new FormError(`the name ${JSON.stringify(value)} contains a NUL character`);
  if (new TextEncoder().encode(value).length > MAX_IDENTIFIER_BYTES) {
    throw new FormError(`the name ${JSON.stringify(value)} is longer than ${MAX_IDENTIFIER_BYTES} bytes`);
  }
  return `"${value.replaceAll('"', '""')}"`;
}

/**
 * @typedef {{name: string, type: string, nullable: boolean, primaryKey: boolean}} ColumnSpec
 * @param {{schema?: string, name: string, columns: ColumnSpec[]}} spec
 * @returns {string} one CREATE TABLE statement
 */
export function createTableSql(spec) {
  const columns = spec.columns || [];
  if (!columns.length) throw new FormError("add at least one column");
  const seen = new Set();
  const lines = columns.map((column) => {
    if (!COLUMN_TYPES.includes(column.type)) throw new FormError(`unknown column type ${JSON.stringify(column.type)}`);
    const ident = quoteIdent(column.name);
    if (seen.has(column.name)) throw new FormError(`two columns are named ${JSON.stringify(column.name)}`);
    seen.add(column.name);
    const notNull = column.primaryKey || !column.nullable ? " NOT NULL" : "";
    return `  ${ident} ${column.type}${notNull}`;
  });
  const keys = columns.filter((c) => c.primaryKey).map((c) => quoteIdent(c.name));
  if (keys.length) lines.push(`  PRIMARY KEY (${keys.join(", ")})`);
  const schema = spec.schema && spec.schema.trim() ? `${quoteIdent(spec.schema.trim())}.` : "";
  return `CREATE TABLE ${schema}${quoteIdent(spec.name)} (\n${lines.join(",\n")}\n)`;
}
