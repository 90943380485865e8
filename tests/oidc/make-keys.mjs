// Writes a private JWK set: node make-keys.mjs FILE KID [ALG]  (RS256 | ES256 | EdDSA)
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
const [file, kid, alg = 'RS256'] = process.argv.slice(2);
const pair =
  alg === 'RS256' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
  : alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('ed25519');
const jwk = { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
writeFileSync(file, JSON.stringify([jwk]));
