// A DOM for the React tests (happy-dom). Imported after helpers.mjs, which keeps
// Node's own fetch for the server API.
import { GlobalRegistrator } from '@happy-dom/global-registrator';

GlobalRegistrator.register({ url: 'http://localhost/' });
